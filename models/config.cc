#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/files.h"
#include "models/json_parse.h"

namespace kvfold {

using json = nlohmann::json;

const char* ArchitectureName(Architecture a) {
  switch (a) {
    case Architecture::kLlama:
      return "LlamaForCausalLM";
    case Architecture::kMistral:
      return "MistralForCausalLM";
    case Architecture::kQwen2:
      return "Qwen2ForCausalLM";
  }
  return "?";
}

namespace {

// Field readers that name the file and the key in every error.
class Reader {
 public:
  Reader(const json& j, const std::string& source) : j_(j), source_(source) {}

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": \"", key, "\" ", what));
  }

  // Integers within [1, max_value]: limits far above any real checkpoint
  // keep a hostile config from sizing absurd allocations.
  absl::Status Int(const std::string& key, int64_t* out, bool required,
                   int64_t max_value) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) {
      return required ? Error(key, "is missing") : absl::OkStatus();
    }
    if (!it->is_number_integer()) return Error(key, "must be an integer");
    const int64_t v = it->get<int64_t>();
    if (v < 1 || v > max_value) {
      return Error(key, absl::StrCat("has value ", v, ", outside [1, ",
                                     max_value, "]"));
    }
    *out = v;
    return absl::OkStatus();
  }

  absl::Status Number(const std::string& key, double* out) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_number()) return Error(key, "must be a number");
    *out = it->get<double>();
    if (!(*out > 0.0) || !std::isfinite(*out)) {
      return Error(key, absl::StrCat("must be positive, got ", *out));
    }
    return absl::OkStatus();
  }

  absl::Status Bool(const std::string& key, bool* out) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return absl::OkStatus();
    if (!it->is_boolean()) return Error(key, "must be true or false");
    *out = it->get<bool>();
    return absl::OkStatus();
  }

  // An id or a list of ids (eos_token_id may be either).
  absl::Status Ids(const std::string& key, std::vector<int32_t>* out) const {
    auto it = j_.find(key);
    if (it == j_.end() || it->is_null()) return absl::OkStatus();
    auto one = [&](const json& v) -> absl::Status {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 ||
          v.get<int64_t>() > INT32_MAX) {
        return Error(key, "must be a non-negative integer or a list of them");
      }
      out->push_back(static_cast<int32_t>(v.get<int64_t>()));
      return absl::OkStatus();
    };
    if (!it->is_array()) return one(*it);
    for (const json& v : *it) {
      if (absl::Status s = one(v); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

 private:
  const json& j_;
  const std::string source_;
};

absl::Status ParseRopeScaling(const json& j, const std::string& source,
                              RopeParams* rope) {
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  const std::string field = source + ": \"rope_scaling\"";
  if (!it->is_object()) {
    return absl::InvalidArgumentError(field + " must be an object or null");
  }
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    auto t = it->find(key);
    if (t != it->end() && t->is_string()) {
      type = t->get<std::string>();
      break;
    }
  }
  if (type.empty() || type == "default") return absl::OkStatus();
  Reader r(*it, source + ": rope_scaling");
  if (type == "linear") {
    rope->scaling = RopeScalingType::kLinear;
  } else if (type == "llama3") {
    rope->scaling = RopeScalingType::kLlama3;
    KVFOLD_RETURN_IF_ERROR(r.Number("low_freq_factor", &rope->low_freq_factor));
    KVFOLD_RETURN_IF_ERROR(r.Number("high_freq_factor", &rope->high_freq_factor));
    KVFOLD_RETURN_IF_ERROR(r.Number("original_max_position_embeddings",
                                    &rope->original_max_position));
    if (!(rope->high_freq_factor > rope->low_freq_factor)) {
      return absl::InvalidArgumentError(
          field + ": high_freq_factor must exceed low_freq_factor");
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        field, " type \"", type,
        "\" is not supported (supported: default, linear, llama3)"));
  }
  if (it->find("factor") == it->end()) {
    return absl::InvalidArgumentError(field + " needs \"factor\"");
  }
  return r.Number("factor", &rope->factor);
}

}  // namespace

absl::StatusOr<ModelConfig> ModelConfig::FromJson(const std::string& text,
                                                  const std::string& source) {
  KVFOLD_ASSIGN_OR_RETURN(const json j, ParseJsonLimited(text, source));
  if (!j.is_object()) {
    return absl::InvalidArgumentError(source + ": must be a JSON object");
  }
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() ||
      !(*arch)[0].is_string()) {
    return absl::InvalidArgumentError(
        source + ": \"architectures\" is missing or not a list of names");
  }
  const std::string name = (*arch)[0].get<std::string>();
  if (name == "LlamaForCausalLM") {
    c.arch = Architecture::kLlama;
  } else if (name == "MistralForCausalLM") {
    c.arch = Architecture::kMistral;
  } else if (name == "Qwen2ForCausalLM") {
    c.arch = Architecture::kQwen2;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": architecture \"", name,
        "\" is not supported (supported: LlamaForCausalLM, "
        "MistralForCausalLM, Qwen2ForCausalLM)"));
  }

  Reader r(j, source);
  KVFOLD_RETURN_IF_ERROR(r.Int("vocab_size", &c.vocab_size, true, 1 << 24));
  KVFOLD_RETURN_IF_ERROR(r.Int("hidden_size", &c.hidden_size, true, 1 << 16));
  KVFOLD_RETURN_IF_ERROR(
      r.Int("intermediate_size", &c.intermediate_size, true, 1 << 20));
  KVFOLD_RETURN_IF_ERROR(r.Int("num_hidden_layers", &c.num_layers, true, 1024));
  KVFOLD_RETURN_IF_ERROR(r.Int("num_attention_heads", &c.num_heads, true, 1024));
  c.num_kv_heads = c.num_heads;
  KVFOLD_RETURN_IF_ERROR(
      r.Int("num_key_value_heads", &c.num_kv_heads, false, 1024));
  if (c.hidden_size % c.num_heads != 0 && j.find("head_dim") == j.end()) {
    return r.Error("hidden_size",
                   "is not divisible by num_attention_heads and no head_dim "
                   "is given");
  }
  c.head_dim = c.hidden_size / c.num_heads;
  KVFOLD_RETURN_IF_ERROR(r.Int("head_dim", &c.head_dim, false, 1024));
  if (c.head_dim % 2 != 0) return r.Error("head_dim", "must be even for RoPE");
  if (c.num_heads % c.num_kv_heads != 0) {
    return r.Error("num_key_value_heads",
                   "must divide num_attention_heads");
  }
  double eps = c.rms_norm_eps;
  KVFOLD_RETURN_IF_ERROR(r.Number("rms_norm_eps", &eps));
  c.rms_norm_eps = static_cast<float>(eps);
  KVFOLD_RETURN_IF_ERROR(r.Number("rope_theta", &c.rope.theta));
  c.rope.rotary_dim = c.head_dim;
  KVFOLD_RETURN_IF_ERROR(ParseRopeScaling(j, source, &c.rope));
  KVFOLD_RETURN_IF_ERROR(r.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  c.max_position_embeddings = 2048;
  KVFOLD_RETURN_IF_ERROR(
      r.Int("max_position_embeddings", &c.max_position_embeddings, false,
            int64_t{1} << 30));
  KVFOLD_RETURN_IF_ERROR(r.Ids("bos_token_id", &c.bos_token_ids));
  KVFOLD_RETURN_IF_ERROR(r.Ids("eos_token_id", &c.eos_token_ids));

  bool flag = false;
  switch (c.arch) {
    case Architecture::kQwen2:
      c.qkv_bias = true;  // Qwen2 always has q/k/v bias, never o bias.
      KVFOLD_RETURN_IF_ERROR(r.Bool("use_sliding_window", &flag));
      if (flag) return r.Error("use_sliding_window", "true is not supported");
      break;
    case Architecture::kLlama:
      KVFOLD_RETURN_IF_ERROR(r.Bool("attention_bias", &flag));
      c.qkv_bias = c.o_bias = flag;
      flag = false;
      KVFOLD_RETURN_IF_ERROR(r.Bool("mlp_bias", &flag));
      if (flag) return r.Error("mlp_bias", "true is not supported");
      break;
    case Architecture::kMistral:
      KVFOLD_RETURN_IF_ERROR(
          r.Int("sliding_window", &c.sliding_window, false, int64_t{1} << 30));
      break;
  }
  auto act = j.find("hidden_act");
  if (act != j.end() && !(act->is_string() && act->get<std::string>() == "silu")) {
    return r.Error("hidden_act", "must be \"silu\"");
  }
  auto dt = j.find("torch_dtype");
  if (dt != j.end() && dt->is_string()) c.torch_dtype = dt->get<std::string>();
  return c;
}

absl::StatusOr<ModelConfig> ModelConfig::FromFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadTextFile(path, kMaxConfigBytes);
  if (!text.ok()) return text.status();
  return FromJson(*text, path);
}

absl::Status ModelConfig::MergeGenerationConfig(const std::string& path) {
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, kMaxConfigBytes));
  KVFOLD_ASSIGN_OR_RETURN(const json j, ParseJsonLimited(text, path));
  if (!j.is_object()) return absl::InvalidArgumentError(path + ": not a JSON object");
  std::vector<int32_t> ids;
  KVFOLD_RETURN_IF_ERROR(Reader(j, path).Ids("eos_token_id", &ids));
  for (int32_t id : ids) {
    if (std::find(eos_token_ids.begin(), eos_token_ids.end(), id) ==
        eos_token_ids.end()) {
      eos_token_ids.push_back(id);
    }
  }
  return absl::OkStatus();
}

int64_t ModelConfig::NumParameters() const {
  const int64_t attn = hidden_size * (q_dim() + 2 * kv_dim()) + q_dim() * hidden_size;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t layer = attn + mlp + 2 * hidden_size;
  const int64_t embed = vocab_size * hidden_size;
  return num_layers * layer + hidden_size + embed * (tie_word_embeddings ? 1 : 2);
}

}  // namespace kvfold
