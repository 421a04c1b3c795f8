// Documents and questions of `kvfold generate/score/tokenize` from the
// flags: token ids (--ids, --ids_file, --questions) or text (--text,
// --text_file, --question, --questions_file) tokenized with the model's
// tokenizer.json, text questions wrapped in the model's chat template.
#ifndef KVFOLD_LAUNCH_PROMPT_H_
#define KVFOLD_LAUNCH_PROMPT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "launch/chat_prompt.h"
#include "models/tokenizer/tokenizer.h"

namespace kvfold {

// Text documents and questions to ids: through the chat template of the
// model's tokenizer_config.json when it has one and `chat` is "auto"; raw
// otherwise (the document with the tokenizer's special tokens, then each
// question's text as is). Holds `tokenizer`, which must outlive it.
class TextPrompter {
 public:
  static absl::StatusOr<TextPrompter> Create(const Tokenizer& tokenizer,
                                             const std::string& model_dir,
                                             const std::string& chat);
  // `what` names the document in errors.
  absl::StatusOr<Prompt> Build(const std::string& document,
                               const std::vector<std::string>& questions,
                               const std::string& system, const std::string& what) const;

 private:
  const Tokenizer* tokenizer_ = nullptr;
  std::string config_;  // tokenizer_config.json, for errors
  std::shared_ptr<const LoadedChatTemplate> template_;  // null: raw
};

// True when any of the text flags is set.
bool TextFlagsGiven();

// The tokenizer of --model: required when text flags are given (an error
// if missing or broken); otherwise loaded when present, for the "text" of
// answers (a broken one is then a warning on stderr, not an error).
absl::StatusOr<std::optional<Tokenizer>> TokenizerFromFlags(const std::string& model_dir);

// The prompt from the flags. `tokenizer` must be set when TextFlagsGiven().
absl::StatusOr<Prompt> PromptFromFlags(const std::string& model_dir,
                                       const Tokenizer* tokenizer);

// --documents_file: one document per line as token ids (blank lines
// skipped), each with the --questions; errors name the file and line.
absl::StatusOr<std::vector<Prompt>> DocumentsFromFlags();

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_PROMPT_H_
