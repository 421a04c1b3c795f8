// The BPE model of a Hugging Face tokenizer.json ("model": {"type": "BPE"}):
// vocabulary, merges by rank, byte fallback to <0xNN> tokens, unknown-token
// fusing and ignore_merges, with the same results as `tokenizers`.
#ifndef KVFOLD_MODELS_TOKENIZER_BPE_H_
#define KVFOLD_MODELS_TOKENIZER_BPE_H_

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"

namespace kvfold {

// Per-call state of BpeModel::EncodeWord: a cache of words already seen and
// reusable buffers. Not shared between threads.
struct BpeScratch {
  absl::flat_hash_map<std::string, std::vector<int32_t>> cache;
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  struct Candidate {
    uint32_t rank;
    int32_t pos;
    int32_t new_id;
  };
  std::vector<Candidate> heap;
};

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object; `where` prefixes errors.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model,
                                           absl::string_view where);

  // Appends the ids of one pre-tokenized word. With `byte_level`, `word` is
  // raw bytes and byte b stands for the byte-level character of b (what the
  // ByteLevel pre-tokenizer maps it to); otherwise `word` is UTF-8 text.
  void EncodeWord(absl::string_view word, bool byte_level, BpeScratch* scratch,
                  std::vector<int32_t>* out) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // The token string of `id`, or nullptr when the vocabulary has no such id.
  const std::string* IdToToken(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t IdLimit() const { return static_cast<int32_t>(id_to_token_.size()); }

 private:
  // EncodeWord after the ignore_merges check: cached, or merged.
  void EncodeSegment(absl::string_view word, bool byte_level, BpeScratch* scratch,
                     std::vector<int32_t>* out) const;
  void Merge(BpeScratch* scratch, std::vector<int32_t>* out) const;
  // Adds the symbols of one character (`text`, its UTF-8) with id `id` or,
  // failing that, byte fallback or the unknown token (fused if asked).
  void AddChar(absl::string_view text, int32_t id, BpeScratch* scratch,
               int32_t* pending_unk) const;

  absl::flat_hash_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  struct MergeRule {
    uint32_t rank;
    int32_t new_id;
  };
  absl::flat_hash_map<uint64_t, MergeRule> merges_;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  int32_t unk_id_ = -1;
  int32_t byte_token_[256];      // id of "<0xNN>", -1 if absent
  int32_t byte_char_id_[256];    // id of byte b's byte-level character
  std::string byte_char_[256];   // that character's UTF-8
  // Byte-level: raw bytes of each token whose characters are all byte-level
  // characters -> id (what ignore_merges looks up).
  absl::flat_hash_map<std::string, int32_t> raw_vocab_;
  // Ids of the single-character tokens, and every pair of adjacent code
  // points inside a token: a word can be cut between two characters that
  // both have ids and form no such pair, since no merge can ever join them
  // (this keeps SentencePiece-style text, one long word, linear and cached).
  absl::flat_hash_map<char32_t, int32_t> char_ids_;
  absl::flat_hash_set<uint64_t> inner_pairs_;
  // Two tokens with one id (allowed by `tokenizers`): merges are by id, so
  // the cut above would not be safe.
  bool shared_ids_ = false;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_BPE_H_
