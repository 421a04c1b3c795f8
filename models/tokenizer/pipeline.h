// The text stages of a tokenizer.json before the BPE model: the normalizer
// (NFC/NFD/NFKC/NFKD, Prepend, Replace, Sequence) and the pre-tokenizer
// (ByteLevel, Split, Metaspace, Digits, Sequence), with the semantics of
// `tokenizers`. Anything else is refused when the file is loaded.
#ifndef KVFOLD_MODELS_TOKENIZER_PIPELINE_H_
#define KVFOLD_MODELS_TOKENIZER_PIPELINE_H_

#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "models/tokenizer/regex.h"

namespace kvfold {

// A string or regex pattern of Split / Replace ({"String": s} or {"Regex": r}).
struct TextPattern {
  std::string literal;                 // when !regex
  std::shared_ptr<const Regex> regex;  // when set
  static absl::StatusOr<TextPattern> FromJson(const nlohmann::json& j,
                                              absl::string_view where);
  // The pattern in obj[key] (missing: an error naming it).
  static absl::StatusOr<TextPattern> FromField(const nlohmann::json& obj, const char* key,
                                               const std::string& where);
  // Calls on_match(begin, end) (byte offsets) for each non-overlapping
  // match, left to right.
  void FindAll(absl::string_view text,
               absl::FunctionRef<void(size_t, size_t)> on_match) const;
  // `text` with every match replaced by `with`.
  std::string ReplaceAll(absl::string_view text, absl::string_view with) const;
};

class Normalizer {
 public:
  // `j` is tokenizer.json's "normalizer" (null: no normalization).
  static absl::StatusOr<Normalizer> FromJson(const nlohmann::json& j,
                                             absl::string_view where);
  bool empty() const { return steps_.empty(); }
  std::string Apply(absl::string_view text) const;

 private:
  struct Step {
    enum Kind { kNfc, kNfd, kNfkc, kNfkd, kPrepend, kReplace } kind;
    std::string text;     // Prepend: what; Replace: the replacement
    TextPattern pattern;  // Replace
  };
  static absl::Status Add(const nlohmann::json& j, const std::string& where,
                          std::vector<Step>* steps);
  std::vector<Step> steps_;
};

class PreTokenizer {
 public:
  // `j` is tokenizer.json's "pre_tokenizer" (null: the whole text is one word).
  static absl::StatusOr<PreTokenizer> FromJson(const nlohmann::json& j,
                                               absl::string_view where);

  // True when words come out as raw bytes that stand for byte-level
  // characters (a ByteLevel step ends the sequence).
  bool byte_level() const { return byte_level_; }

  // Cuts `text` into words and calls emit(word) for each non-empty one.
  // `at_start`: `text` begins at the start of the input (Metaspace's
  // prepend_scheme "first").
  void Run(absl::string_view text, bool at_start,
           absl::FunctionRef<void(absl::string_view)> emit) const;

 private:
  enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext,
                        kContiguous };
  struct Step {
    enum Kind { kSplit, kByteLevel, kMetaspace, kDigits } kind;
    TextPattern pattern;  // Split; ByteLevel with use_regex; Metaspace's split
    Behavior behavior = Behavior::kIsolated;
    bool invert = false;
    bool add_prefix_space = false;  // ByteLevel
    bool use_regex = false;         // ByteLevel
    std::string replacement;        // Metaspace
    enum Prepend { kAlways, kFirst, kNever } prepend = kAlways;
    bool split = false;             // Metaspace
    bool individual_digits = false; // Digits
  };
  static absl::Status Add(const nlohmann::json& j, const std::string& where,
                          std::vector<Step>* steps);
  void RunStep(size_t index, absl::string_view text, bool at_start,
               absl::FunctionRef<void(absl::string_view)> emit) const;
  // Splits `text` at the matches found by `find` under `behavior`.
  static void SplitBy(absl::string_view text, Behavior behavior, bool invert,
                      absl::FunctionRef<void(absl::FunctionRef<void(size_t, size_t)>)> find,
                      absl::FunctionRef<void(absl::string_view, bool)> emit);

  std::vector<Step> steps_;
  bool byte_level_ = false;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_PIPELINE_H_
