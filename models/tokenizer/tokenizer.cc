#include "models/tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/files.h"
#include "models/json_parse.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using tokenizer_json::FieldError;
using tokenizer_json::json;

constexpr size_t kMaxJsonBytes = size_t{1} << 30;

// The ids of the special tokens the single-sequence template puts around
// the text. Anything but TemplateProcessing, ByteLevel and Sequence of them
// is refused.
absl::Status ReadPostProcessor(const json& j, const std::string& where,
                               std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (j.is_null()) return absl::OkStatus();
  KVFOLD_ASSIGN_OR_RETURN(std::string type, tokenizer_json::GetType(j, where));
  if (type == "ByteLevel") return absl::OkStatus();
  if (type == "Sequence") {
    return tokenizer_json::ForEachInSequence(
        j, "processors", where, [&](const json& item, const std::string& at) {
          return ReadPostProcessor(item, at, prefix, suffix);
        });
  }
  if (type != "TemplateProcessing") {
    return FieldError(where, absl::StrCat("post_processor type \"", type,
                                          "\" is not supported (supported: "
                                          "TemplateProcessing, ByteLevel, Sequence)"));
  }
  auto single = j.find("single");
  auto specials = j.find("special_tokens");
  if (single == j.end() || !single->is_array()) return FieldError(where, "missing \"single\"");
  if (specials == j.end() || !specials->is_object()) {
    return FieldError(where, "missing \"special_tokens\"");
  }
  bool seen_sequence = false;
  // In a Sequence a later template wraps the earlier result: its prefix
  // goes first, its suffix last.
  std::vector<int32_t> local_prefix;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& item = (*single)[i];
    const std::string at = absl::StrCat(where, ".single[", i, "]");
    if (item.contains("Sequence")) {
      if (seen_sequence) return FieldError(at, "the template has two sequences");
      seen_sequence = true;
      continue;
    }
    auto special = item.find("SpecialToken");
    if (special == item.end() || !special->is_object()) {
      return FieldError(at, "must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
    }
    KVFOLD_ASSIGN_OR_RETURN(std::string name, tokenizer_json::GetString(*special, "id", at));
    auto entry = specials->find(name);
    if (entry == specials->end() || !entry->contains("ids") || !(*entry)["ids"].is_array()) {
      return FieldError(at, absl::StrCat("special token \"", name,
                                         "\" is not in special_tokens"));
    }
    for (const json& id : (*entry)["ids"]) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return FieldError(at, absl::StrCat("special token \"", name, "\" has a bad id"));
      }
      (seen_sequence ? *suffix : local_prefix).push_back(id.get<int32_t>());
    }
  }
  if (!seen_sequence) return FieldError(where + ".single", "has no $A sequence");
  prefix->insert(prefix->begin(), local_prefix.begin(), local_prefix.end());
  return absl::OkStatus();
}

// A special token in tokenizer_config.json: a string, {"content": ...} or null.
absl::StatusOr<std::string> ConfigToken(const json& config, const char* key,
                                        const std::string& where) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string();
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) return tokenizer_json::GetString(*it, "content", where + "." + key);
  return FieldError(where, absl::StrCat("\"", key, "\" must be a string or an object"));
}

absl::StatusOr<json> ParseJson(absl::string_view text, const std::string& name) {
  KVFOLD_ASSIGN_OR_RETURN(json j, ParseJsonLimited(text, name));
  if (!j.is_object()) return absl::InvalidArgumentError(name + ": must be a JSON object");
  return j;
}

}  // namespace

absl::StatusOr<Tokenizer> Tokenizer::FromDirectory(const std::string& dir) {
  const std::string path = dir + "/tokenizer.json";
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, kMaxJsonBytes));
  std::string config;
  const std::string config_path = dir + "/tokenizer_config.json";
  if (std::filesystem::exists(config_path)) {
    KVFOLD_ASSIGN_OR_RETURN(config, ReadTextFile(config_path, kMaxJsonBytes));
    if (config.empty()) config = " ";  // present but empty: a JSON error below
  }
  return FromJsonText(text, config, path);
}

absl::StatusOr<Tokenizer> Tokenizer::FromJsonText(absl::string_view tokenizer_json,
                                                  absl::string_view config_json,
                                                  const std::string& name) {
  Tokenizer t;
  t.name_ = name;
  KVFOLD_ASSIGN_OR_RETURN(json j, ParseJson(tokenizer_json, name));
  const json null_json;
  auto field = [&](const char* key) -> const json& {
    auto it = j.find(key);
    return it == j.end() ? null_json : *it;
  };
  const json& model = field("model");
  if (!model.is_object()) return FieldError(name, "missing \"model\"");
  KVFOLD_ASSIGN_OR_RETURN(std::string model_type,
                          tokenizer_json::GetOptionalString(model, "type", "BPE",
                                                            name + ": model"));
  if (model_type != "BPE") {
    return FieldError(name + ": model.type",
                      absl::StrCat("\"", model_type,
                                   "\" is not supported (kvfold reads BPE tokenizers, "
                                   "as Llama-family checkpoints use)"));
  }
  KVFOLD_ASSIGN_OR_RETURN(BpeModel bpe, BpeModel::FromJson(model, name + ": model"));
  t.model_ = std::make_shared<const BpeModel>(std::move(bpe));
  KVFOLD_ASSIGN_OR_RETURN(t.normalizer_,
                          Normalizer::FromJson(field("normalizer"), name + ": normalizer"));
  KVFOLD_ASSIGN_OR_RETURN(
      t.pre_tokenizer_,
      PreTokenizer::FromJson(field("pre_tokenizer"), name + ": pre_tokenizer"));
  KVFOLD_ASSIGN_OR_RETURN(t.decoder_, Decoder::FromJson(field("decoder"), name + ": decoder"));
  const Normalizer& normalizer = t.normalizer_;
  KVFOLD_ASSIGN_OR_RETURN(
      t.added_, AddedTokens::FromJson(field("added_tokens"), name + ": added_tokens",
                                      [&](absl::string_view s) { return normalizer.Apply(s); }));
  KVFOLD_RETURN_IF_ERROR(ReadPostProcessor(field("post_processor"), name + ": post_processor",
                                           &t.prefix_ids_, &t.suffix_ids_));
  t.id_limit_ = t.model_->IdLimit();
  for (const AddedToken& a : t.added_.tokens()) {
    if (int64_t(a.id) > int64_t(t.id_limit_) + (int64_t{1} << 20)) {
      return FieldError(name + ": added_tokens",
                        absl::StrCat("id ", a.id, " (\"", a.content,
                                     "\") is far beyond the vocabulary"));
    }
    t.id_limit_ = std::max(t.id_limit_, a.id + 1);
  }

  if (!config_json.empty()) {
    const std::string config_name =
        (std::filesystem::path(name).parent_path() / "tokenizer_config.json").string();
    KVFOLD_ASSIGN_OR_RETURN(json config, ParseJson(config_json, config_name));
    KVFOLD_ASSIGN_OR_RETURN(t.bos_token_, ConfigToken(config, "bos_token", config_name));
    KVFOLD_ASSIGN_OR_RETURN(t.eos_token_, ConfigToken(config, "eos_token", config_name));
    KVFOLD_ASSIGN_OR_RETURN(std::string cls, tokenizer_json::GetOptionalString(
                                                 config, "tokenizer_class", "", config_name));
    // transformers' Llama/CodeLlama/Gemma fast tokenizers rebuild the
    // template from add_bos_token (default true) and add_eos_token (false).
    static const char* kRebuilding[] = {"LlamaTokenizer", "LlamaTokenizerFast",
                                        "CodeLlamaTokenizer", "CodeLlamaTokenizerFast",
                                        "GemmaTokenizer", "GemmaTokenizerFast"};
    if (std::find(std::begin(kRebuilding), std::end(kRebuilding), cls) !=
        std::end(kRebuilding)) {
      KVFOLD_ASSIGN_OR_RETURN(bool add_bos, tokenizer_json::GetBool(config, "add_bos_token",
                                                                    true, config_name));
      KVFOLD_ASSIGN_OR_RETURN(bool add_eos, tokenizer_json::GetBool(config, "add_eos_token",
                                                                    false, config_name));
      t.prefix_ids_.clear();
      t.suffix_ids_.clear();
      for (auto [add, token, ids, key] :
           {std::tuple{add_bos, &t.bos_token_, &t.prefix_ids_, "bos_token"},
            std::tuple{add_eos, &t.eos_token_, &t.suffix_ids_, "eos_token"}}) {
        if (!add) continue;
        std::optional<int32_t> id = token->empty() ? std::nullopt : t.TokenToId(*token);
        if (!id) {
          return FieldError(config_name, absl::StrCat("add_", std::string(key).substr(0, 3),
                                                      "_token is set but ", key, " \"",
                                                      *token, "\" is not a known token"));
        }
        ids->push_back(*id);
      }
    }
  }
  return t;
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  if (const AddedToken* a = added_.ByContent(token)) return a->id;
  return model_->TokenToId(token);
}

const std::string* Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* a = added_.ById(id)) return &a->content;
  return model_->IdToToken(id);
}

void Tokenizer::EncodePiece(absl::string_view text, bool at_start, BpeScratch* scratch,
                            std::vector<int32_t>* ids) const {
  const bool byte_level = pre_tokenizer_.byte_level();
  pre_tokenizer_.Run(text, at_start, [&](absl::string_view word) {
    model_->EncodeWord(word, byte_level, scratch, ids);
  });
}

absl::StatusOr<std::vector<int32_t>> Tokenizer::Encode(absl::string_view text,
                                                       bool add_special_tokens) const {
  if (!unicode::IsValidUtf8(text)) {
    std::u32string unused;
    absl::Status s = unicode::DecodeUtf8(text, &unused, "input text");
    return s.ok() ? absl::InvalidArgumentError("input text: invalid UTF-8") : s;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  if (add_special_tokens) ids = prefix_ids_;
  BpeScratch scratch;
  // Pass 1: tokens matched in the raw text; pass 2, inside each remaining
  // piece after normalization: tokens matched in normalized text.
  added_.Split(text, /*normalized_pass=*/false, [&](absl::string_view piece, int32_t id) {
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
    const bool at_start = piece.data() == text.data();
    std::string normalized;
    absl::string_view view = piece;
    if (!normalizer_.empty()) {
      normalized = normalizer_.Apply(piece);
      view = normalized;
    }
    added_.Split(view, /*normalized_pass=*/true, [&](absl::string_view sub, int32_t sub_id) {
      if (sub_id >= 0) {
        ids.push_back(sub_id);
      } else {
        EncodePiece(sub, at_start && sub.data() == view.data(), &scratch, &ids);
      }
    });
  });
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special_tokens && added_.IsSpecial(id)) continue;
    if (const std::string* t = IdToToken(id)) tokens.push_back(*t);
  }
  return decoder_.Decode(std::move(tokens));
}

std::string StreamDecoder::Advance(bool final) {
  absl::Span<const int32_t> all(ids_);
  const std::string before =
      tokenizer_.Decode(all.subspan(prefix_, read_ - prefix_), skip_special_);
  const std::string now = tokenizer_.Decode(all.subspan(prefix_), skip_special_);
  // Wait while the text has not grown past what was emitted or, before the
  // end, ends in an incomplete character (U+FFFD).
  if (now.size() <= before.size() || !absl::StartsWith(now, before) ||
      (!final && absl::EndsWith(now, "\xEF\xBF\xBD"))) {
    return std::string();
  }
  prefix_ = read_;
  read_ = ids_.size();
  return now.substr(before.size());
}

std::string StreamDecoder::Step(int32_t id) {
  ids_.push_back(id);
  // ByteFallback decodes a run of <0xNN> tokens as a whole (an invalid run
  // becomes one U+FFFD per byte), so nothing is emitted inside a run.
  if (const std::string* token = tokenizer_.IdToToken(id);
      token != nullptr && ByteFallbackValue(*token) >= 0) {
    return std::string();
  }
  return Advance(/*final=*/false);
}

std::string StreamDecoder::Finish() {
  std::string rest = Advance(/*final=*/true);
  prefix_ = read_ = ids_.size();
  return rest;
}

}  // namespace kvfold
