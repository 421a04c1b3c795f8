#include "models/tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/status_macros.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/json_util.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using tokenizer_json::FieldError;
using tokenizer_json::json;

// Words longer than this are not cached (as in `tokenizers`).
constexpr size_t kMaxCachedWord = 256;
constexpr size_t kMaxCacheEntries = 1 << 16;

uint64_t PairKey(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

// Min-heap order: lower rank first, then the leftmost position.
bool HeapAfter(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}

}  // namespace

absl::StatusOr<BpeModel> BpeModel::FromJson(const json& model, absl::string_view where) {
  BpeModel m;
  const std::string w(where);
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) {
    return FieldError(w, "missing \"vocab\" (an object of token -> id)");
  }
  int32_t max_id = -1;
  m.vocab_.reserve(vocab_it->size());
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 ||
        it->get<int64_t>() > INT32_MAX) {
      return FieldError(w + ".vocab",
                        absl::StrCat("\"", it.key(), "\" has no valid id (",
                                     it->dump(), ")"));
    }
    const int32_t id = it->get<int32_t>();
    m.vocab_[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  if (m.vocab_.empty()) return FieldError(w + ".vocab", "is empty");
  // Ids are dense in real files; a far-out id would only make the id table
  // huge.
  if (int64_t(max_id) > int64_t(m.vocab_.size()) + (int64_t{1} << 20)) {
    return FieldError(w + ".vocab", absl::StrCat("id ", max_id, " is far beyond the ",
                                                 m.vocab_.size(), " tokens"));
  }
  m.id_to_token_.resize(max_id + 1);
  m.has_id_.assign(max_id + 1, false);
  for (const auto& [token, id] : m.vocab_) {
    if (m.has_id_[id]) m.shared_ids_ = true;
    m.id_to_token_[id] = token;
    m.has_id_[id] = true;
  }

  KVFOLD_ASSIGN_OR_RETURN(m.byte_fallback_,
                          tokenizer_json::GetBool(model, "byte_fallback", false, w));
  KVFOLD_ASSIGN_OR_RETURN(m.fuse_unk_,
                          tokenizer_json::GetBool(model, "fuse_unk", false, w));
  KVFOLD_ASSIGN_OR_RETURN(m.ignore_merges_,
                          tokenizer_json::GetBool(model, "ignore_merges", false, w));
  for (const char* unsupported : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(unsupported);
    if (it != model.end() && !it->is_null() && *it != "") {
      return FieldError(w, absl::StrCat("\"", unsupported,
                                        "\" is not supported (Llama-family BPE has none)"));
    }
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0) {
      return FieldError(w, "\"dropout\" must be null or 0: kvfold encodes "
                           "deterministically");
    }
  }
  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    if (!it->is_string()) return FieldError(w, "\"unk_token\" must be a string");
    auto id = m.vocab_.find(it->get<std::string>());
    if (id == m.vocab_.end()) {
      return FieldError(w, absl::StrCat("unk_token \"", it->get<std::string>(),
                                        "\" is not in the vocabulary"));
    }
    m.unk_id_ = id->second;
  }

  for (int b = 0; b < 256; ++b) {
    auto it = m.vocab_.find(absl::StrFormat("<0x%02X>", b));
    m.byte_token_[b] = it == m.vocab_.end() ? -1 : it->second;
    m.byte_char_[b].clear();
    unicode::AppendUtf8(byte_level::ByteToChar(uint8_t(b)), &m.byte_char_[b]);
    auto c = m.vocab_.find(m.byte_char_[b]);
    m.byte_char_id_[b] = c == m.vocab_.end() ? -1 : c->second;
  }
  // Raw bytes of tokens made only of byte-level characters.
  std::u32string chars;
  for (const auto& [token, id] : m.vocab_) {
    if (!unicode::DecodeUtf8(token, &chars).ok()) continue;
    std::string raw;
    bool ok = true;
    for (char32_t c : chars) {
      const int b = byte_level::CharToByte(c);
      if (b < 0) {
        ok = false;
        break;
      }
      raw.push_back(char(b));
    }
    if (ok) m.raw_vocab_.emplace(std::move(raw), id);
    if (chars.size() == 1) m.char_ids_[chars[0]] = id;
    for (size_t i = 1; i < chars.size(); ++i) {
      m.inner_pairs_.insert(PairKey(int32_t(chars[i - 1]), int32_t(chars[i])));
    }
  }

  auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) {
    return FieldError(w, "missing \"merges\" (a list of \"a b\" or [a, b])");
  }
  m.merges_.reserve(merges_it->size());
  uint32_t rank = 0;
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const json& item = (*merges_it)[i];
    const std::string at = absl::StrCat(w, ".merges[", i, "]");
    std::string a, b;
    if (item.is_string()) {
      const std::string line = item.get<std::string>();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
        return FieldError(at, absl::StrCat("\"", line,
                                           "\" is not two tokens separated by one space"));
      }
      a = line.substr(0, space);
      b = line.substr(space + 1);
    } else if (item.is_array() && item.size() == 2 && item[0].is_string() &&
               item[1].is_string()) {
      a = item[0].get<std::string>();
      b = item[1].get<std::string>();
    } else {
      return FieldError(at, absl::StrCat("must be \"a b\" or [\"a\", \"b\"], not ",
                                         item.dump()));
    }
    auto ia = m.vocab_.find(a);
    auto ib = m.vocab_.find(b);
    auto inew = m.vocab_.find(a + b);
    for (auto [it, token] : {std::pair{ia, &a}, std::pair{ib, &b}}) {
      if (it == m.vocab_.end()) {
        return FieldError(at, absl::StrCat("refers to unknown token \"", *token, "\""));
      }
    }
    if (inew == m.vocab_.end()) {
      return FieldError(at, absl::StrCat("merged token \"", a + b,
                                         "\" is not in the vocabulary"));
    }
    // A repeated pair keeps the later rank, as `tokenizers` does.
    m.merges_[PairKey(ia->second, ib->second)] = MergeRule{rank, inew->second};
    ++rank;
  }
  return m;
}

std::optional<int32_t> BpeModel::TokenToId(absl::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || id >= IdLimit() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::AddChar(absl::string_view text, int32_t id, BpeScratch* scratch,
                       int32_t* pending_unk) const {
  auto push = [&](int32_t symbol) {
    const int32_t n = static_cast<int32_t>(scratch->symbols.size());
    scratch->symbols.push_back({symbol, n - 1, n + 1, true});
  };
  if (id >= 0) {
    if (*pending_unk >= 0) {
      push(*pending_unk);
      *pending_unk = -1;
    }
    push(id);
    return;
  }
  if (byte_fallback_) {
    bool all = true;
    for (unsigned char b : text) all = all && byte_token_[b] >= 0;
    if (all) {
      for (unsigned char b : text) push(byte_token_[b]);
      return;
    }
  }
  if (unk_id_ < 0) return;  // dropped, as `tokenizers` does without unk_token
  if (*pending_unk >= 0 && !fuse_unk_) push(*pending_unk);
  *pending_unk = unk_id_;
}

void BpeModel::EncodeWord(absl::string_view word, bool byte_level, BpeScratch* scratch,
                          std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto& table = byte_level ? raw_vocab_ : vocab_;
    if (auto it = table.find(word); it != table.end()) {
      out->push_back(it->second);
      return;
    }
  }
  if (!byte_level && !shared_ids_ && word.size() > kMaxCachedWord / 4) {
    // Cut where no merge can cross (see inner_pairs_).
    size_t segment = 0;
    char32_t prev = 0;
    bool prev_known = false;
    size_t n = 0;
    for (size_t i = 0; i < word.size(); i += n) {
      const char32_t c = unicode::CharAt(word, i, &n);
      const bool known = char_ids_.contains(c);
      if (i > segment && prev_known && known &&
          !inner_pairs_.contains(PairKey(int32_t(prev), int32_t(c)))) {
        EncodeSegment(word.substr(segment, i - segment), false, scratch, out);
        segment = i;
      }
      prev = c;
      prev_known = known;
    }
    EncodeSegment(word.substr(segment), false, scratch, out);
    return;
  }
  EncodeSegment(word, byte_level, scratch, out);
}

void BpeModel::EncodeSegment(absl::string_view word, bool byte_level, BpeScratch* scratch,
                             std::vector<int32_t>* out) const {
  const bool cacheable = word.size() <= kMaxCachedWord;
  if (cacheable) {
    if (auto it = scratch->cache.find(word); it != scratch->cache.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  scratch->symbols.clear();
  int32_t pending_unk = -1;
  if (byte_level) {
    for (unsigned char b : word) {
      AddChar(byte_char_[b], byte_char_id_[b], scratch, &pending_unk);
    }
  } else {
    size_t n = 0;
    for (size_t i = 0; i < word.size(); i += n) {
      auto it = char_ids_.find(unicode::CharAt(word, i, &n));
      AddChar(word.substr(i, n), it == char_ids_.end() ? -1 : it->second, scratch,
              &pending_unk);
    }
  }
  if (pending_unk >= 0) {
    const int32_t n = static_cast<int32_t>(scratch->symbols.size());
    scratch->symbols.push_back({pending_unk, n - 1, n + 1, true});
  }
  if (scratch->symbols.empty()) return;
  scratch->symbols.back().next = -1;
  const size_t before = out->size();
  Merge(scratch, out);
  if (cacheable && scratch->cache.size() < kMaxCacheEntries) {
    scratch->cache.emplace(std::string(word),
                           std::vector<int32_t>(out->begin() + before, out->end()));
  }
}

void BpeModel::Merge(BpeScratch* scratch, std::vector<int32_t>* out) const {
  auto& sym = scratch->symbols;
  auto& heap = scratch->heap;
  heap.clear();
  auto rule = [&](int32_t a, int32_t b) -> const MergeRule* {
    auto it = merges_.find(PairKey(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  auto push = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    if (const MergeRule* r = rule(sym[pos].id, sym[next].id)) {
      heap.push_back({r->rank, pos, r->new_id});
      std::push_heap(heap.begin(), heap.end(), HeapAfter);
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), HeapAfter);
    const BpeScratch::Candidate top = heap.back();
    heap.pop_back();
    BpeScratch::Symbol& left = sym[top.pos];
    if (!left.alive || left.next < 0) continue;
    BpeScratch::Symbol& right = sym[left.next];
    // A stale entry: the pair at this position changed since it was queued.
    const MergeRule* r = rule(left.id, right.id);
    if (r == nullptr || r->new_id != top.new_id) continue;
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = top.pos;
    if (left.prev >= 0) push(left.prev);
    push(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

}  // namespace kvfold
