// Added and special tokens of a tokenizer.json ("added_tokens"): matched in
// the text before normalization and pre-tokenization and never split, as in
// `tokenizers` (leftmost-longest match; lstrip/rstrip take the whitespace
// around a match; single_word only matches between non-word characters).
#ifndef KVFOLD_MODELS_TOKENIZER_ADDED_TOKENS_H_
#define KVFOLD_MODELS_TOKENIZER_ADDED_TOKENS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"

namespace kvfold {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
  bool special = false;
};

class AddedTokens {
 public:
  // `list` is tokenizer.json's "added_tokens"; `normalize` maps the content
  // of tokens with normalized=true to the form matched in normalized text.
  static absl::StatusOr<AddedTokens> FromJson(
      const nlohmann::json& list, absl::string_view where,
      const std::function<std::string(absl::string_view)>& normalize);

  // Cuts `text` at the tokens of one pass (normalized=false tokens are
  // matched in the raw text, normalized=true ones in normalized text): calls
  // emit(piece, id) in order, id -1 for text between tokens. Pieces cover
  // `text`; an empty text gives one empty piece.
  void Split(absl::string_view text, bool normalized_pass,
             absl::FunctionRef<void(absl::string_view, int32_t)> emit) const;

  const AddedToken* ById(int32_t id) const;
  const AddedToken* ByContent(absl::string_view content) const;
  bool IsSpecial(int32_t id) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // A byte trie over token contents; `value` is the index of the token
  // ending at a node, -1 if none.
  struct Trie {
    std::vector<absl::flat_hash_map<unsigned char, int32_t>> next{{}};
    std::vector<int32_t> value{-1};
    std::array<bool, 256> starts{};  // first bytes of the keys
    bool empty() const { return next.size() == 1; }
    void Insert(absl::string_view key, int32_t v);
    // The longest key that starts at text[pos], as (length, value); value -1
    // if none.
    std::pair<size_t, int32_t> Longest(absl::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<int32_t, size_t> by_id_;
  absl::flat_hash_map<std::string, size_t> by_content_;
  Trie raw_;
  Trie normalized_;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_ADDED_TOKENS_H_
