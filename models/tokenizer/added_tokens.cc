#include "models/tokenizer/added_tokens.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using tokenizer_json::FieldError;
using tokenizer_json::json;

// Rust regex's \w (what `tokenizers` checks single_word with): Alphabetic,
// marks, decimal digits, connector punctuation and the joiners; Oniguruma's
// \w minus other numbers (No).
bool IsWordChar(char32_t c) {
  if (c == 0x200C || c == 0x200D) return true;
  return unicode::IsWordChar(c) && unicode::Category(c) != unicode::kNo;
}

}  // namespace

void AddedTokens::Trie::Insert(absl::string_view key, int32_t v) {
  starts[static_cast<unsigned char>(key[0])] = true;
  int32_t node = 0;
  for (unsigned char c : key) {
    auto it = next[node].find(c);
    if (it == next[node].end()) {
      next.emplace_back();
      value.push_back(-1);
      const int32_t child = static_cast<int32_t>(next.size()) - 1;
      next[node][c] = child;
      node = child;
    } else {
      node = it->second;
    }
  }
  value[node] = v;
}

std::pair<size_t, int32_t> AddedTokens::Trie::Longest(absl::string_view text,
                                                      size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  if (!starts[static_cast<unsigned char>(text[pos])]) return best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    auto it = next[node].find(static_cast<unsigned char>(text[i]));
    if (it == next[node].end()) break;
    node = it->second;
    if (value[node] >= 0) best = {i + 1 - pos, value[node]};
  }
  return best;
}

absl::StatusOr<AddedTokens> AddedTokens::FromJson(
    const json& list, absl::string_view where,
    const std::function<std::string(absl::string_view)>& normalize) {
  AddedTokens t;
  if (list.is_null()) return t;
  if (!list.is_array()) return FieldError(where, "must be a list");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = absl::StrCat(where, "[", i, "]");
    const json& item = list[i];
    if (!item.is_object()) return FieldError(at, "must be an object");
    AddedToken token;
    KVFOLD_ASSIGN_OR_RETURN(int64_t id, tokenizer_json::GetInt(item, "id", -1, at));
    if (id < 0 || id > INT32_MAX) return FieldError(at, "missing \"id\"");
    token.id = static_cast<int32_t>(id);
    KVFOLD_ASSIGN_OR_RETURN(token.content, tokenizer_json::GetString(item, "content", at));
    if (token.content.empty()) return FieldError(at, "\"content\" is empty");
    if (!unicode::IsValidUtf8(token.content)) {
      return FieldError(at, "\"content\" is not valid UTF-8");
    }
    KVFOLD_ASSIGN_OR_RETURN(token.single_word,
                            tokenizer_json::GetBool(item, "single_word", false, at));
    KVFOLD_ASSIGN_OR_RETURN(token.lstrip, tokenizer_json::GetBool(item, "lstrip", false, at));
    KVFOLD_ASSIGN_OR_RETURN(token.rstrip, tokenizer_json::GetBool(item, "rstrip", false, at));
    KVFOLD_ASSIGN_OR_RETURN(token.special,
                            tokenizer_json::GetBool(item, "special", false, at));
    // `tokenizers` defaults normalized to !special.
    KVFOLD_ASSIGN_OR_RETURN(token.normalized, tokenizer_json::GetBool(
                                                  item, "normalized", !token.special, at));
    const size_t index = t.tokens_.size();
    t.by_id_[token.id] = index;
    t.by_content_[token.content] = index;
    t.tokens_.push_back(std::move(token));
  }
  for (size_t i = 0; i < t.tokens_.size(); ++i) {
    const AddedToken& token = t.tokens_[i];
    if (token.normalized) {
      const std::string pattern = normalize(token.content);
      if (!pattern.empty()) t.normalized_.Insert(pattern, static_cast<int32_t>(i));
    } else {
      t.raw_.Insert(token.content, static_cast<int32_t>(i));
    }
  }
  return t;
}

const AddedToken* AddedTokens::ById(int32_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedTokens::ByContent(absl::string_view content) const {
  auto it = by_content_.find(content);
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

bool AddedTokens::IsSpecial(int32_t id) const {
  const AddedToken* t = ById(id);
  return t != nullptr && t->special;
}

void AddedTokens::Split(absl::string_view text, bool normalized_pass,
                        absl::FunctionRef<void(absl::string_view, int32_t)> emit) const {
  const Trie& trie = normalized_pass ? normalized_ : raw_;
  if (text.empty() || trie.empty()) {
    emit(text, -1);
    return;
  }
  size_t start_offset = 0;  // end of the last emitted piece
  size_t pos = 0;           // where the search resumes
  size_t n = 0;  // byte length of the character CharAt/CharBefore read
  while (pos < text.size()) {
    const auto [length, index] = trie.Longest(text, pos);
    if (index < 0) {
      ++pos;  // keys are valid UTF-8, so none starts inside a character
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + length;
    pos = stop;
    if (token.single_word) {
      const bool start_ok = start == 0 || !IsWordChar(unicode::CharBefore(text, start, &n));
      const bool stop_ok = stop == text.size() || !IsWordChar(unicode::CharAt(text, stop, &n));
      if (!start_ok || !stop_ok) continue;
    }
    if (token.lstrip) {
      // The whitespace run before the token, but not text already emitted
      // (as `tokenizers` takes the max with the last piece's end).
      start = std::max(start, start_offset);
      while (start > start_offset &&
             unicode::IsWhitespace(unicode::CharBefore(text, start, &n))) {
        start -= n;
      }
    }
    if (token.rstrip) {
      while (stop < text.size() && unicode::IsWhitespace(unicode::CharAt(text, stop, &n))) {
        stop += n;
      }
      // The search resumes at the token's end, not after the stripped
      // whitespace (as `tokenizers`' matcher does).
    }
    if (start_offset < start) emit(text.substr(start_offset, start - start_offset), -1);
    emit(text.substr(start, stop - start), token.id);
    start_offset = stop;
  }
  if (start_offset < text.size()) emit(text.substr(start_offset), -1);
}

}  // namespace kvfold
