// tokenizer.json's "decoder": token strings back to text (ByteLevel,
// ByteFallback, Fuse, Strip, Replace, Metaspace, Sequence), as `tokenizers`
// decodes them.
#ifndef KVFOLD_MODELS_TOKENIZER_DECODERS_H_
#define KVFOLD_MODELS_TOKENIZER_DECODERS_H_

#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "models/tokenizer/pipeline.h"

namespace kvfold {

// The byte a byte-fallback token "<0xNN>" stands for, or -1.
int ByteFallbackValue(absl::string_view token);

class Decoder {
 public:
  // `j` null: tokens are joined with spaces (what `tokenizers` does without
  // a decoder).
  static absl::StatusOr<Decoder> FromJson(const nlohmann::json& j, absl::string_view where);
  std::string Decode(std::vector<std::string> tokens) const;

 private:
  struct Step {
    enum Kind { kByteLevel, kByteFallback, kFuse, kStrip, kReplace, kMetaspace } kind;
    std::string content;  // Replace: the replacement; Metaspace: its character
    char32_t strip_char = 0;     // Strip
    size_t start = 0, stop = 0;  // Strip
    TextPattern pattern;         // Replace
    bool drop_first_space = true;  // Metaspace: prepend_scheme != never
  };
  static absl::Status Add(const nlohmann::json& j, const std::string& where,
                          std::vector<Step>* steps);
  static std::vector<std::string> Apply(const Step& step, std::vector<std::string> tokens);

  bool present_ = false;
  std::vector<Step> steps_;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_DECODERS_H_
