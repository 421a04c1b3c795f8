// Hugging Face chat templates (tokenizer_config.json "chat_template"),
// rendered as transformers' apply_chat_template(..., tokenize=False) does.
#ifndef KVFOLD_MODELS_CHAT_CHAT_TEMPLATE_H_
#define KVFOLD_MODELS_CHAT_CHAT_TEMPLATE_H_

#include <ctime>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "models/chat/jinja.h"

namespace kvfold {

struct ChatMessage {
  std::string role;
  std::string content;
};

// A parsed chat template: parsed once, rendered many times.
class ChatTemplate {
 public:
  // `source` is the Jinja text; `name` prefixes error messages (e.g.
  // "tokenizer_config.json: chat_template").
  static absl::StatusOr<ChatTemplate> Parse(std::string_view source,
                                            std::string_view name);

  // Renders `messages` with the variables transformers passes: messages,
  // add_generation_prompt, tools=None, documents=None, then `variables`
  // (special tokens such as bos_token/eos_token and extra kwargs such as
  // date_string), all as strings. A raise_exception(msg) in the template
  // gives InvalidArgumentError(msg); other failures name the template
  // line:column.
  absl::StatusOr<std::string> Render(
      const std::vector<ChatMessage>& messages, bool add_generation_prompt,
      const std::map<std::string, std::string>& variables) const;

  // The clock behind strftime_now() (default: the local time now). Tests
  // fix it to reproduce golden renders.
  void set_clock(std::function<std::time_t()> now, bool utc) {
    now_ = std::move(now);
    utc_ = utc;
  }

  const jinja::Template& jinja_template() const { return template_; }

 private:
  explicit ChatTemplate(jinja::Template t) : template_(std::move(t)) {}

  jinja::Template template_;
  std::function<std::time_t()> now_;
  bool utc_ = false;
};

// A tokenizer_config.json's template and its special-token strings.
struct LoadedChatTemplate {
  ChatTemplate chat_template;
  // bos_token, eos_token, unk_token, pad_token, sep_token, cls_token,
  // mask_token: those present as strings or {"content": ...} objects.
  std::map<std::string, std::string> special_tokens;
};

// Reads tokenizer_config.json: "chat_template" is a string, or a list of
// {"name", "template"} objects of which "default" is used. NotFound if
// there is no chat template.
absl::StatusOr<LoadedChatTemplate> LoadChatTemplate(
    const std::string& tokenizer_config_path);

}  // namespace kvfold

#endif  // KVFOLD_MODELS_CHAT_CHAT_TEMPLATE_H_
