// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) for
// Llama-family checkpoints: byte-level BPE (GPT-2, Llama 3, Qwen2 style) and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral). Encodes and
// decodes exactly as the `tokenizers` library does (tested against records
// it produced, tests/golden/tokenizers).
#ifndef KVFOLD_MODELS_TOKENIZER_TOKENIZER_H_
#define KVFOLD_MODELS_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "models/tokenizer/added_tokens.h"
#include "models/tokenizer/bpe.h"
#include "models/tokenizer/decoders.h"
#include "models/tokenizer/pipeline.h"

namespace kvfold {

class Tokenizer {
 public:
  // DIR/tokenizer.json and, when present, DIR/tokenizer_config.json.
  static absl::StatusOr<Tokenizer> FromDirectory(const std::string& dir);
  // From file contents; `name` is the tokenizer.json path used in errors
  // (config_json may be empty: no tokenizer_config.json).
  static absl::StatusOr<Tokenizer> FromJsonText(absl::string_view tokenizer_json,
                                                absl::string_view config_json,
                                                const std::string& name);

  // Text (valid UTF-8, else an error naming the byte offset) to ids. With
  // add_special_tokens, the post-processor's tokens (e.g. BOS) are added.
  absl::StatusOr<std::vector<int32_t>> Encode(absl::string_view text,
                                              bool add_special_tokens) const;
  // Ids to text; ids the tokenizer does not know are skipped (as in
  // `tokenizers`). Always valid UTF-8 (invalid bytes become U+FFFD).
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special_tokens) const;

  std::optional<int32_t> TokenToId(absl::string_view token) const;
  // Token string of an id (added tokens first), nullptr if unknown.
  const std::string* IdToToken(int32_t id) const;
  bool IsSpecial(int32_t id) const { return added_.IsSpecial(id); }
  // One past the largest id (vocabulary and added tokens).
  int32_t IdLimit() const { return id_limit_; }

  // Special-token strings from tokenizer_config.json ("" when absent).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  // The path of the tokenizer.json this came from.
  const std::string& name() const { return name_; }

 private:
  // Appends the ids of `text` (no added tokens in it), normalized and
  // pre-tokenized. `at_start`: text begins the input.
  void EncodePiece(absl::string_view text, bool at_start, BpeScratch* scratch,
                   std::vector<int32_t>* ids) const;

  std::string name_;
  std::shared_ptr<const BpeModel> model_;
  Normalizer normalizer_;
  PreTokenizer pre_tokenizer_;
  AddedTokens added_;
  Decoder decoder_;
  // The single-sequence template: ids before and after the text.
  std::vector<int32_t> prefix_ids_, suffix_ids_;
  std::string bos_token_, eos_token_;
  int32_t id_limit_ = 0;
};

// Detokenizes ids one at a time, emitting text only when it is complete:
// never half a UTF-8 character, and the concatenation of everything Step
// and Finish return is the full Decode of the same ids.
class StreamDecoder {
 public:
  StreamDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
      : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}
  // The new text that `id` completes (possibly empty).
  std::string Step(int32_t id);
  // Whatever is still held back (e.g. an incomplete character at the end).
  std::string Finish();

 private:
  // Emits what the ids after read_ add to the text, unless it must wait.
  std::string Advance(bool final);

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // ids_[prefix_, read_) decode to text already emitted
  size_t read_ = 0;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_TOKENIZER_H_
