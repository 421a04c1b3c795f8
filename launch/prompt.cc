#include "launch/prompt.h"

#include "launch/chat_prompt.h"

#include <cstdio>
#include <filesystem>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"
#include "launch/commands.h"
#include "launch/flags.h"
#include "models/chat/chat_template.h"
#include "models/files.h"

namespace kvfold {
namespace {

constexpr size_t kMaxTextBytes = size_t{1} << 31;

absl::StatusOr<std::vector<std::string>> TextQuestions() {
  std::vector<std::string> questions;
  const std::string one = absl::GetFlag(FLAGS_question);
  const std::string file = absl::GetFlag(FLAGS_questions_file);
  if (!one.empty() && !file.empty()) {
    return absl::InvalidArgumentError("give at most one of --question and --questions_file");
  }
  if (!one.empty()) questions.push_back(one);
  if (!file.empty()) {
    KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(file, kMaxTextBytes));
    for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      questions.emplace_back(line);
    }
    if (questions.empty()) return absl::InvalidArgumentError(file + ": no questions");
  }
  return questions;
}

// --questions: token ids, questions separated by ';'.
absl::StatusOr<std::vector<std::vector<int32_t>>> IdQuestions(const std::string& flag) {
  std::vector<std::vector<int32_t>> questions;
  if (flag.empty()) return questions;
  for (absl::string_view q : absl::StrSplit(flag, ';')) {
    KVFOLD_ASSIGN_OR_RETURN(
        std::vector<int32_t> ids,
        ParseIds(std::string(q), absl::StrCat("--questions (question ", questions.size(), ")")));
    questions.push_back(std::move(ids));
  }
  return questions;
}

}  // namespace

absl::StatusOr<std::vector<Prompt>> DocumentsFromFlags() {
  const std::string path = absl::GetFlag(FLAGS_documents_file);
  if (TextFlagsGiven() || !absl::GetFlag(FLAGS_ids).empty() ||
      !absl::GetFlag(FLAGS_ids_file).empty()) {
    return absl::InvalidArgumentError(
        "--documents_file takes the documents as token ids, one per line; give "
        "questions with --questions, not --ids/--text flags");
  }
  KVFOLD_ASSIGN_OR_RETURN(std::vector<std::vector<int32_t>> questions,
                          IdQuestions(absl::GetFlag(FLAGS_questions)));
  KVFOLD_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, kMaxTextBytes));
  std::vector<Prompt> docs;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    Prompt p;
    KVFOLD_ASSIGN_OR_RETURN(p.document,
                            ParseIds(std::string(line), absl::StrCat(path, ":", line_no)));
    p.questions = questions;
    docs.push_back(std::move(p));
  }
  if (docs.empty()) return absl::InvalidArgumentError(path + ": no documents");
  return docs;
}

bool TextFlagsGiven() {
  return !absl::GetFlag(FLAGS_text).empty() || !absl::GetFlag(FLAGS_text_file).empty() ||
         !absl::GetFlag(FLAGS_question).empty() ||
         !absl::GetFlag(FLAGS_questions_file).empty();
}

absl::StatusOr<std::optional<Tokenizer>> TokenizerFromFlags(const std::string& model_dir) {
  const bool required = TextFlagsGiven();
  if (!required && !std::filesystem::exists(model_dir + "/tokenizer.json")) {
    return std::optional<Tokenizer>();
  }
  absl::StatusOr<Tokenizer> t = Tokenizer::FromDirectory(model_dir);
  if (t.ok()) return std::optional<Tokenizer>(std::move(*t));
  if (required) {
    return absl::Status(t.status().code(),
                        absl::StrCat("text input needs the model's tokenizer: ",
                                     t.status().message()));
  }
  std::fprintf(stderr, "kvfold: warning: answers will have ids only: %s\n",
               std::string(t.status().message()).c_str());
  return std::optional<Tokenizer>();
}

absl::StatusOr<Prompt> PromptFromFlags(const std::string& model_dir,
                                       const Tokenizer* tokenizer) {
  Prompt p;
  const std::string ids = absl::GetFlag(FLAGS_ids);
  const std::string ids_file = absl::GetFlag(FLAGS_ids_file);
  const std::string id_questions = absl::GetFlag(FLAGS_questions);
  const std::string text = absl::GetFlag(FLAGS_text);
  const std::string text_file = absl::GetFlag(FLAGS_text_file);
  const int given = !ids.empty() + !ids_file.empty() + !text.empty() + !text_file.empty();
  if (given != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --ids, --ids_file, --text and --text_file");
  }
  if (!TextFlagsGiven()) {
    if (!ids.empty()) {
      KVFOLD_ASSIGN_OR_RETURN(p.document, ParseIds(ids, "--ids"));
    } else {
      KVFOLD_ASSIGN_OR_RETURN(std::string content, ReadTextFile(ids_file, kMaxTextBytes));
      KVFOLD_ASSIGN_OR_RETURN(p.document, ParseIds(content, ids_file));
    }
    KVFOLD_ASSIGN_OR_RETURN(p.questions, IdQuestions(id_questions));
    return p;
  }
  if (!id_questions.empty()) {
    return absl::InvalidArgumentError(
        "--questions takes token ids: use --question or --questions_file with text");
  }
  if (!ids.empty() || !ids_file.empty()) {
    return absl::InvalidArgumentError(
        "give the document and the questions both as ids or both as text");
  }
  if (tokenizer == nullptr) return absl::InternalError("text input without a tokenizer");
  p.from_text = true;
  std::string document = text;
  std::string what = "--text";
  if (!text_file.empty()) {
    KVFOLD_ASSIGN_OR_RETURN(document, ReadTextFile(text_file, kMaxTextBytes));
    what = text_file;
  }
  KVFOLD_ASSIGN_OR_RETURN(std::vector<std::string> questions, TextQuestions());
  KVFOLD_ASSIGN_OR_RETURN(
      TextPrompter prompter,
      TextPrompter::Create(*tokenizer, model_dir, absl::GetFlag(FLAGS_chat)));
  return prompter.Build(document, questions, absl::GetFlag(FLAGS_system), what);
}

absl::StatusOr<TextPrompter> TextPrompter::Create(const Tokenizer& tokenizer,
                                                  const std::string& model_dir,
                                                  const std::string& chat) {
  if (chat != "auto" && chat != "raw") {
    return absl::InvalidArgumentError(absl::StrCat("--chat=", chat, ": expected auto or raw"));
  }
  TextPrompter p;
  p.tokenizer_ = &tokenizer;
  p.config_ = model_dir + "/tokenizer_config.json";
  if (chat == "raw" || !std::filesystem::exists(p.config_)) return p;
  absl::StatusOr<LoadedChatTemplate> loaded = LoadChatTemplate(p.config_);
  if (absl::IsNotFound(loaded.status())) return p;
  if (!loaded.ok()) {
    return absl::Status(loaded.status().code(),
                        absl::StrCat(loaded.status().message(),
                                     " (use --chat=raw to send the text without a template)"));
  }
  p.template_ = std::make_shared<LoadedChatTemplate>(std::move(*loaded));
  return p;
}

absl::StatusOr<Prompt> TextPrompter::Build(const std::string& document,
                                           const std::vector<std::string>& questions,
                                           const std::string& system,
                                           const std::string& what) const {
  Prompt p;
  p.from_text = true;
  if (questions.empty() || template_ == nullptr) {
    // A plain continuation, or raw: the document as the tokenizer adds
    // special tokens to a sequence, each question as plain text after it.
    KVFOLD_ASSIGN_OR_RETURN(p.document, EncodeText(*tokenizer_, document, true, what));
    for (size_t i = 0; i < questions.size(); ++i) {
      KVFOLD_ASSIGN_OR_RETURN(std::vector<int32_t> q,
                              EncodeText(*tokenizer_, questions[i], false,
                                         absl::StrCat("question ", i)));
      p.questions.push_back(std::move(q));
    }
    return p;
  }
  return ChatPrompt(*tokenizer_, *template_, config_, document, questions, system);
}

}  // namespace kvfold
