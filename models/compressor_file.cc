#include "models/compressor_file.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/safetensors.h"

namespace kvfold {
namespace {

class Fields {
 public:
  Fields(const std::string& path, const std::map<std::string, std::string>& m)
      : path_(path), m_(m) {}

  absl::StatusOr<std::string> Text(const std::string& key) const {
    auto it = m_.find(key);
    if (it == m_.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path_, ": the metadata has no \"", key, "\" (not a kvfold compressor file?)"));
    }
    return it->second;
  }
  absl::StatusOr<int64_t> Int(const std::string& key) const {
    KVFOLD_ASSIGN_OR_RETURN(std::string text, Text(key));
    int64_t v;
    if (!absl::SimpleAtoi(text, &v)) return Bad(key, text, "an integer");
    return v;
  }
  absl::StatusOr<double> Real(const std::string& key) const {
    KVFOLD_ASSIGN_OR_RETURN(std::string text, Text(key));
    double v;
    if (!absl::SimpleAtod(text, &v) || !std::isfinite(v)) return Bad(key, text, "a number");
    return v;
  }

 private:
  absl::Status Bad(const std::string& key, const std::string& text,
                   const std::string& want) const {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": metadata \"", key, "\" is \"",
                                                   text, "\", not ", want));
  }
  const std::string& path_;
  const std::map<std::string, std::string>& m_;
};

absl::StatusOr<std::shared_ptr<const LoCoCoParams>> ReadLoCoCo(
    const SafetensorsFile& file, const Fields& f, int64_t num_layers) {
  auto p = std::make_shared<LoCoCoParams>();
  KVFOLD_ASSIGN_OR_RETURN(p->slots, f.Int("cache_slots"));
  KVFOLD_ASSIGN_OR_RETURN(p->compressed_slots, f.Int("compressed_slots"));
  KVFOLD_ASSIGN_OR_RETURN(p->kernel, f.Int("kernel_size"));
  KVFOLD_ASSIGN_OR_RETURN(p->hh_keep_rate, f.Real("hh_keep_rate"));
  KVFOLD_ASSIGN_OR_RETURN(p->buffer, f.Int("buffer"));
  KVFOLD_ASSIGN_OR_RETURN(p->head_dim, f.Int("model.head_dim"));
  KVFOLD_ASSIGN_OR_RETURN(p->variant, f.Text("variant"));
  const std::string& path = file.path();
  auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  if (p->hh_keep_rate < 0 || p->hh_keep_rate >= 1) {
    return bad(absl::StrCat("hh_keep_rate must be in [0, 1), got ", p->hh_keep_rate));
  }
  // The same rounding as the calibration code: int(M * (1 - rate)).
  const auto expected = static_cast<int64_t>(double(p->slots) * (1.0 - p->hh_keep_rate));
  if (p->compressed_slots != expected) {
    return bad(absl::StrCat("compressed_slots ", p->compressed_slots, " is not cache_slots ",
                            p->slots, " * (1 - hh_keep_rate ", p->hh_keep_rate, ") = ",
                            expected));
  }
  // The sizes, before any tensor is read with them.
  if (absl::Status s = p->Validate(); !s.ok()) return bad(std::string(s.message()));
  if (num_layers < 1) return bad("model.num_hidden_layers must be >= 1");
  const int64_t mc = p->compressed_slots, in = 2 * p->head_dim;
  for (int64_t l = 0; l < num_layers; ++l) {
    const std::string prefix = absl::StrCat("lococo.layers.", l, ".");
    LoCoCoLayer w;
    KVFOLD_ASSIGN_OR_RETURN(w.conv_weight,
                            file.LoadF32(prefix + "conv.weight", {mc, in, p->kernel}));
    KVFOLD_ASSIGN_OR_RETURN(w.conv_bias, file.LoadF32(prefix + "conv.bias", {mc}));
    KVFOLD_ASSIGN_OR_RETURN(Tensor alpha, file.LoadF32(prefix + "alpha", {1}));
    w.alpha = alpha.as<float>()[0];
    for (const Tensor* t : {&w.conv_weight, &w.conv_bias, &alpha}) {
      const float* x = t->as<float>();
      for (int64_t i = 0; i < t->numel(); ++i) {
        if (!std::isfinite(x[i])) {
          return bad(absl::StrCat("layer ", l, " holds a non-finite value (", x[i], ")"));
        }
      }
    }
    p->layers.push_back(std::move(w));
  }
  const int64_t expected_tensors = 3 * num_layers;
  if (static_cast<int64_t>(file.tensors().size()) != expected_tensors) {
    return bad(absl::StrCat("holds ", file.tensors().size(), " tensors; ", num_layers,
                            " layers of LoCoCo have ", expected_tensors));
  }
  return std::shared_ptr<const LoCoCoParams>(std::move(p));
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CompressorFile>> LoadCompressorFile(
    const std::string& path) {
  KVFOLD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                          SafetensorsFile::Open(path));
  auto out = std::make_shared<CompressorFile>();
  out->path = path;
  out->metadata = file->metadata();
  const Fields f(path, out->metadata);
  KVFOLD_ASSIGN_OR_RETURN(std::string format, f.Text("format"));
  if (format != "kvfold-compressor") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": format is \"", format, "\", not a kvfold compressor file"));
  }
  KVFOLD_ASSIGN_OR_RETURN(int64_t version, f.Int("format_version"));
  if (version != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": format_version ", version, " is not supported (this kvfold reads 1)"));
  }
  CalibratedFor& m = out->model;
  KVFOLD_ASSIGN_OR_RETURN(m.name, f.Text("model.name"));
  KVFOLD_ASSIGN_OR_RETURN(m.num_layers, f.Int("model.num_hidden_layers"));
  KVFOLD_ASSIGN_OR_RETURN(m.hidden_size, f.Int("model.hidden_size"));
  KVFOLD_ASSIGN_OR_RETURN(m.num_heads, f.Int("model.num_attention_heads"));
  KVFOLD_ASSIGN_OR_RETURN(m.num_kv_heads, f.Int("model.num_key_value_heads"));
  KVFOLD_ASSIGN_OR_RETURN(m.head_dim, f.Int("model.head_dim"));
  KVFOLD_ASSIGN_OR_RETURN(m.vocab_size, f.Int("model.vocab_size"));
  KVFOLD_ASSIGN_OR_RETURN(out->method, f.Text("method"));
  if (out->method != "lococo") {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": method \"", out->method, "\" is not one kvfold learns (lococo)"));
  }
  KVFOLD_ASSIGN_OR_RETURN(out->lococo, ReadLoCoCo(*file, f, m.num_layers));
  return std::shared_ptr<const CompressorFile>(std::move(out));
}

absl::Status CheckCompressorModel(const CompressorFile& file,
                                  const ModelConfig& c) {
  const CalibratedFor& m = file.model;
  if (m.num_layers == c.num_layers && m.hidden_size == c.hidden_size &&
      m.num_heads == c.num_heads && m.num_kv_heads == c.num_kv_heads &&
      m.head_dim == c.head_dim && m.vocab_size == c.vocab_size) {
    return absl::OkStatus();
  }
  auto shape = [](int64_t layers, int64_t hidden, int64_t heads, int64_t kv,
                  int64_t head_dim, int64_t vocab) {
    return absl::StrCat(layers, " layers, hidden ", hidden, ", ", heads, " heads / ", kv,
                        " KV heads of ", head_dim, ", vocabulary ", vocab);
  };
  return absl::InvalidArgumentError(absl::StrCat(
      file.path, " was calibrated for the model \"", m.name, "\" (",
      shape(m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim,
            m.vocab_size),
      ") but --model has ",
      shape(c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
            c.vocab_size),
      ": calibrate one for this model (tools/calibrate/calibrate.py --model=...)"));
}

}  // namespace kvfold
