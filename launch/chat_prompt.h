// A document and questions as token ids, through the model's chat template
// (no flags here: tests use it directly).
#ifndef KVFOLD_LAUNCH_CHAT_PROMPT_H_
#define KVFOLD_LAUNCH_CHAT_PROMPT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "models/chat/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace kvfold {

// tokenizer.Encode with errors prefixed by `what` (where the text came from).
absl::StatusOr<std::vector<int32_t>> EncodeText(const Tokenizer& tokenizer,
                                                const std::string& text, bool add_special,
                                                const std::string& what);

struct Prompt {
  std::vector<int32_t> document;
  std::vector<std::vector<int32_t>> questions;
  bool from_text = false;
  bool chat_template = false;  // the questions went through chat_template
};

// Each question about `document` as the user's message "DOCUMENT\n\nQUESTION"
// (after an optional system message) in the chat template, with the
// generation prompt. The ids of document + question i are exactly the
// tokenization of the whole rendered prompt i (as transformers'
// apply_chat_template(tokenize=True)); the document's ids are the part all
// prompts share. `config` names tokenizer_config.json in errors.
absl::StatusOr<Prompt> ChatPrompt(const Tokenizer& tokenizer,
                                  const LoadedChatTemplate& loaded,
                                  const std::string& config, const std::string& document,
                                  const std::vector<std::string>& questions,
                                  const std::string& system);

}  // namespace kvfold

#endif  // KVFOLD_LAUNCH_CHAT_PROMPT_H_
