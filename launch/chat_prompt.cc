#include "launch/chat_prompt.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace kvfold {
namespace {

// Stands for the document while the chat template is rendered: the
// rendered text is cut there into the document part (prefilled and
// compressed once) and the question part.
constexpr char kDocumentMark[] = "\x1Bkvfold-document\x1B";

}  // namespace

absl::StatusOr<std::vector<int32_t>> EncodeText(const Tokenizer& tokenizer,
                                                const std::string& text, bool add_special,
                                                const std::string& what) {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text, add_special);
  if (!ids.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", ids.status().message()));
  }
  return ids;
}

absl::StatusOr<Prompt> ChatPrompt(const Tokenizer& tokenizer,
                                  const LoadedChatTemplate& loaded,
                                  const std::string& config, const std::string& document,
                                  const std::vector<std::string>& questions,
                                  const std::string& system) {
  if (questions.empty()) return absl::InvalidArgumentError("a chat prompt needs a question");
  Prompt p;
  p.from_text = true;
  const std::string what = "the document";
  p.chat_template = true;
  auto render = [&](const std::string& user) -> absl::StatusOr<std::string> {
    std::vector<ChatMessage> messages;
    if (!system.empty()) messages.push_back({"system", system});
    messages.push_back({"user", user});
    absl::StatusOr<std::string> rendered = loaded.chat_template.Render(
        messages, /*add_generation_prompt=*/true, loaded.special_tokens);
    if (!rendered.ok()) {
      return absl::Status(rendered.status().code(),
                          absl::StrCat(config, ": chat_template: ", rendered.status().message(),
                                       " (use --chat=raw to send the text without a template)"));
    }
    return rendered;
  };
  // Where the document starts: the template's text before the message.
  KVFOLD_ASSIGN_OR_RETURN(std::string marked,
                          render(absl::StrCat(kDocumentMark, "\n\n", questions[0])));
  const size_t mark = marked.find(kDocumentMark);
  if (mark == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        config, ": chat_template does not place the user's message in the prompt "
                "(use --chat=raw)"));
  }
  const std::string prefix = marked.substr(0, mark);
  // Each prompt rendered with the real message (a template may trim it, as
  // Llama 3's does) and tokenized whole, as transformers' apply_chat_template.
  const size_t lead = document.find_first_not_of(" \t\n\r\v\f");
  const std::string trimmed = lead == std::string::npos ? "" : document.substr(lead);
  std::string document_part;
  std::vector<std::vector<int32_t>> full;
  for (size_t i = 0; i < questions.size(); ++i) {
    KVFOLD_ASSIGN_OR_RETURN(std::string whole,
                            render(absl::StrCat(document, "\n\n", questions[i])));
    std::string part;
    for (const std::string* body : {&document, &trimmed}) {
      if (whole.compare(0, prefix.size() + body->size(), prefix + *body) == 0) {
        part = prefix + *body;
        break;
      }
    }
    if (part.empty() || (i > 0 && part != document_part)) {
      return absl::InvalidArgumentError(absl::StrCat(
          config, ": chat_template changes the document text or renders it differently "
                  "per question (use --chat=raw, or one question per run)"));
    }
    document_part = part;
    // The template writes the special tokens itself, so none are added.
    KVFOLD_ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                            EncodeText(tokenizer, whole, false, absl::StrCat("question ", i)));
    full.push_back(std::move(ids));
  }
  // The document's ids are the prefix every prompt shares with the document
  // part tokenized alone, so that document + question is exactly the
  // tokenization of the whole prompt (a token may span the boundary).
  KVFOLD_ASSIGN_OR_RETURN(p.document,
                          EncodeText(tokenizer, document_part, false, what));
  size_t shared = p.document.size();
  for (const std::vector<int32_t>& ids : full) {
    size_t n = 0;
    while (n < shared && n < ids.size() && ids[n] == p.document[n]) ++n;
    shared = n;
  }
  p.document.resize(shared);
  for (std::vector<int32_t>& ids : full) {
    p.questions.emplace_back(ids.begin() + shared, ids.end());
  }
  return p;
}

}  // namespace kvfold
