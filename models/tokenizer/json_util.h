// Typed access to tokenizer.json / tokenizer_config.json fields with errors
// that name the file and the field ("tokenizer.json: model.merges[3]: ...").
#ifndef KVFOLD_MODELS_TOKENIZER_JSON_UTIL_H_
#define KVFOLD_MODELS_TOKENIZER_JSON_UTIL_H_

#include <functional>
#include <string>
#include "absl/strings/string_view.h"

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "models/tokenizer/unicode.h"

namespace kvfold::tokenizer_json {

using json = nlohmann::json;

inline absl::Status FieldError(absl::string_view where, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(where, ": ", what));
}

// The JSON type in words, for messages.
inline std::string TypeName(const json& j) { return j.type_name(); }

// `obj[key]` as a string; missing or another type is an error.
inline absl::StatusOr<std::string> GetString(const json& obj, const char* key,
                                             absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end()) return FieldError(where, absl::StrCat("missing \"", key, "\""));
  if (!it->is_string()) {
    return FieldError(where, absl::StrCat("\"", key, "\" must be a string, not ",
                                          TypeName(*it)));
  }
  return it->get<std::string>();
}

// `obj[key]` as a bool; missing or null gives `fallback`.
inline absl::StatusOr<bool> GetBool(const json& obj, const char* key,
                                    bool fallback, absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return FieldError(where, absl::StrCat("\"", key, "\" must be true or false, not ",
                                          TypeName(*it)));
  }
  return it->get<bool>();
}

// `obj[key]` as a non-negative integer; missing or null gives `fallback`.
inline absl::StatusOr<int64_t> GetInt(const json& obj, const char* key,
                                      int64_t fallback, absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_number_integer() || it->get<int64_t>() < 0) {
    return FieldError(where, absl::StrCat("\"", key,
                                          "\" must be a non-negative integer"));
  }
  return it->get<int64_t>();
}

// `obj[key]` as a string, or `fallback` when missing or null.
inline absl::StatusOr<std::string> GetOptionalString(const json& obj, const char* key,
                                                     std::string fallback,
                                                     absl::string_view where) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_string()) {
    return FieldError(where, absl::StrCat("\"", key, "\" must be a string, not ",
                                          TypeName(*it)));
  }
  return it->get<std::string>();
}

// The "type" of a component object ("BPE", "ByteLevel", ...).
inline absl::StatusOr<std::string> GetType(const json& obj, absl::string_view where) {
  if (!obj.is_object()) {
    return FieldError(where, absl::StrCat("must be an object, not ", TypeName(obj)));
  }
  return GetString(obj, "type", where);
}

// `obj[key]` as a string of exactly one character (U+0000..U+10FFFF).
inline absl::StatusOr<std::string> GetChar(const json& obj, const char* key,
                                           absl::string_view where) {
  absl::StatusOr<std::string> s = GetString(obj, key, where);
  if (!s.ok()) return s;
  size_t length = 0;
  if (s->empty() || !unicode::IsValidUtf8(*s) ||
      (unicode::CharAt(*s, 0, &length), length != s->size())) {
    return FieldError(where, absl::StrCat("\"", key, "\" must be one character"));
  }
  return s;
}

// Metaspace's prepend_scheme ("always", "first", "never"); older files have
// add_prefix_space instead (true: always).
inline absl::StatusOr<std::string> GetPrependScheme(const json& obj, absl::string_view where) {
  absl::StatusOr<bool> add_prefix = GetBool(obj, "add_prefix_space", true, where);
  if (!add_prefix.ok()) return add_prefix.status();
  absl::StatusOr<std::string> scheme =
      GetOptionalString(obj, "prepend_scheme", *add_prefix ? "always" : "never", where);
  if (scheme.ok() && *scheme != "always" && *scheme != "first" && *scheme != "never") {
    return FieldError(where, absl::StrCat("unknown prepend_scheme \"", *scheme, "\""));
  }
  return scheme;
}

// For a {"type": "Sequence", list_key: [...]} component: calls add(item,
// its path) for each item in order.
inline absl::Status ForEachInSequence(
    const json& j, const char* list_key, const std::string& where,
    const std::function<absl::Status(const json&, const std::string&)>& add) {
  auto it = j.find(list_key);
  if (it == j.end() || !it->is_array()) {
    return FieldError(where, absl::StrCat("missing \"", list_key, "\""));
  }
  for (size_t i = 0; i < it->size(); ++i) {
    absl::Status s = add((*it)[i], absl::StrCat(where, ".", list_key, "[", i, "]"));
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace kvfold::tokenizer_json

#endif  // KVFOLD_MODELS_TOKENIZER_JSON_UTIL_H_
