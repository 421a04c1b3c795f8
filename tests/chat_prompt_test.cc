// Document + question prompts through real chat templates against
// transformers' apply_chat_template(tokenize=True)
// (tools/tokenizer/make_chat_prompt_fixtures.py): for every question, the
// document's ids followed by the question's ids are the ids transformers
// gives for the whole conversation.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "launch/chat_prompt.h"

namespace kvfold {
namespace {

class ChatPromptTest : public ::testing::TestWithParam<const char*> {};

TEST_P(ChatPromptTest, MatchesApplyChatTemplate) {
  const std::string dir = std::string("tests/golden/chat_prompts/") + GetParam();
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string config = dir + "/tokenizer_config.json";
  absl::StatusOr<LoadedChatTemplate> loaded = LoadChatTemplate(config);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  std::ifstream in(dir + "/golden.json");
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json golden = nlohmann::json::parse(ss.str());
  ASSERT_GE(golden["cases"].size(), 12u);
  for (const nlohmann::json& c : golden["cases"]) {
    const std::string document = c["document"];
    const std::vector<std::string> questions = c["questions"];
    absl::StatusOr<Prompt> p =
        ChatPrompt(*tokenizer, *loaded, config, document, questions, c["system"]);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(p->chat_template);
    ASSERT_EQ(p->questions.size(), questions.size());
    EXPECT_GT(p->document.size(), 5u);
    for (size_t i = 0; i < questions.size(); ++i) {
      std::vector<int32_t> whole = p->document;
      whole.insert(whole.end(), p->questions[i].begin(), p->questions[i].end());
      EXPECT_EQ(whole, c["ids"][i].get<std::vector<int32_t>>())
          << "document \"" << document << "\" question \"" << questions[i] << "\"";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatPromptTest,
                         ::testing::Values("llama31", "mistral_v03", "qwen25"));

}  // namespace
}  // namespace kvfold
