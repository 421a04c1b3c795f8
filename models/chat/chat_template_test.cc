// Every golden render of tests/golden/chat_templates/golden.json (produced by
// transformers' own chat template environment, see
// tools/tokenizer/make_chat_golden.py) must match byte for byte, and every
// template error must carry jinja2's message.
#include "models/chat/chat_template.h"

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace kvfold {
namespace {

const char kDir[] = "tests/golden/chat_templates/";

nlohmann::ordered_json ReadGolden() {
  std::ifstream in(std::string(kDir) + "golden.json");
  EXPECT_TRUE(in.good());
  return nlohmann::ordered_json::parse(in);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<ChatMessage> Conversation(const nlohmann::ordered_json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) {
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

TEST(ChatTemplateGoldenTest, AllTemplatesMatchTransformers) {
  nlohmann::ordered_json golden = ReadGolden();
  ASSERT_EQ(golden["templates"].size(), 8u);
  const std::time_t now = golden["now_epoch_utc"].get<int64_t>();
  int renders = 0, errors = 0;
  for (const auto& t : golden["templates"]) {
    const std::string file = t["file"].get<std::string>();
    SCOPED_TRACE(file);
    auto tmpl = ChatTemplate::Parse(ReadFile(kDir + file), file);
    ASSERT_TRUE(tmpl.ok()) << tmpl.status();
    tmpl->set_clock([now] { return now; }, /*utc=*/true);
    for (const auto& c : t["cases"]) {
      const std::string conv = c["conversation"].get<std::string>();
      const bool agp = c["add_generation_prompt"].get<bool>();
      SCOPED_TRACE(conv + (agp ? " +generation_prompt" : ""));
      std::map<std::string, std::string> vars =
          c["variables"].get<std::map<std::string, std::string>>();
      auto got = tmpl->Render(Conversation(golden["conversations"][conv]), agp, vars);
      if (c.contains("output")) {
        ASSERT_TRUE(got.ok()) << got.status();
        EXPECT_EQ(*got, c["output"].get<std::string>());
        ++renders;
      } else {
        ASSERT_FALSE(got.ok()) << *got;
        EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
        EXPECT_EQ(got.status().message(), c["error"].get<std::string>());
        ++errors;
      }
    }
  }
  EXPECT_EQ(renders + errors, 220);
  EXPECT_GT(errors, 0);
}

TEST(ChatTemplateTest, MistralAlternationError) {
  auto tmpl = ChatTemplate::Parse(
      ReadFile(std::string(kDir) + "mistralai-Mistral-7B-Instruct-v0.2.jinja"),
      "mistral");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  auto got = tmpl->Render({{"user", "a"}, {"user", "b"}}, false,
                          {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().message(),
            "Conversation roles must alternate user/assistant/user/assistant/...");
  got = tmpl->Render({{"user", "a"}, {"assistant", "b"}}, false,
                     {{"bos_token", "<s>"}, {"eos_token", "</s>"}});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "<s>[INST] a [/INST]b</s>");
}

TEST(ChatTemplateTest, RealClockFillsLlama32Date) {
  auto tmpl = ChatTemplate::Parse(
      ReadFile(std::string(kDir) + "meta-llama-Llama-3.2-1B-Instruct.jinja"), "l32");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  auto got = tmpl->Render({{"user", "hi"}}, true, {{"bos_token", "<|begin_of_text|>"}});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_NE(got->find("Today Date: "), std::string::npos);
  EXPECT_EQ(got->find("Today Date: \n"), std::string::npos);
}

TEST(ChatTemplateTest, MalformedTemplatesGiveClearErrors) {
  struct Case {
    const char* source;
    const char* expect;
  };
  const Case cases[] = {
      {"{% for m in messages %}{{ m.content }}", "'for' block is not closed"},
      {"{{ messages[0].content ", "missing '}}'"},
      {"{{ messages|frobnicate }}", "no filter named 'frobnicate'"},
      {"{% if x %}{% endfor %}", "unknown or unsupported tag 'endfor'"},
      {"{% extends 'base' %}", "unsupported tag 'extends'"},
      {"hello\n{{ 'unterminated }}", "cfg:2:4: unterminated string literal"},
      {"{# never closed", "unclosed comment"},
  };
  for (const Case& c : cases) {
    auto t = ChatTemplate::Parse(c.source, "cfg");
    ASSERT_FALSE(t.ok()) << c.source;
    EXPECT_NE(t.status().message().find(c.expect), std::string::npos)
        << c.source << " -> " << t.status();
  }
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "{% if true %}";
  EXPECT_FALSE(ChatTemplate::Parse(deep, "cfg").ok());
  std::string parens = std::string(100000, '(');
  EXPECT_FALSE(ChatTemplate::Parse("{{ " + parens + " }}", "cfg").ok());
  // Runtime errors name the position too.
  auto t = ChatTemplate::Parse("{{ messages[0].content.nosuch() }}", "cfg");
  ASSERT_TRUE(t.ok());
  auto r = t->Render({{"user", "x"}}, false, {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cfg:1:"), std::string::npos) << r.status();
}

class LoadChatTemplateTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& text) {
    std::string path = std::string(testing::TempDir()) + "/tokenizer_config_" +
                       std::to_string(counter_++) + ".json";
    std::ofstream(path) << text;
    return path;
  }
  int counter_ = 0;
};

TEST_F(LoadChatTemplateTest, StringTemplateAndTokenObjects) {
  nlohmann::json cfg = {
      {"chat_template", ReadFile(std::string(kDir) + "Qwen-Qwen2-7B-Instruct.jinja")},
      {"eos_token", "<|im_end|>"},
      {"pad_token", {{"content", "<|endoftext|>"}, {"lstrip", false}}},
      {"bos_token", nullptr},
  };
  auto loaded = LoadChatTemplate(Write(cfg.dump()));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->special_tokens.at("eos_token"), "<|im_end|>");
  EXPECT_EQ(loaded->special_tokens.at("pad_token"), "<|endoftext|>");
  EXPECT_EQ(loaded->special_tokens.count("bos_token"), 0u);
  auto got = loaded->chat_template.Render({{"user", "hi"}}, true,
                                          loaded->special_tokens);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(LoadChatTemplateTest, NamedTemplateListUsesDefault) {
  nlohmann::json cfg = {
      {"chat_template",
       {{{"name", "tool_use"}, {"template", "TOOLS"}},
        {{"name", "default"}, {"template", "{{ messages|length }}"}}}},
  };
  auto loaded = LoadChatTemplate(Write(cfg.dump()));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded->chat_template.Render({{"user", "a"}, {"assistant", "b"}},
                                          false, {}),
            "2");
}

TEST_F(LoadChatTemplateTest, MissingTemplateIsNotFound) {
  EXPECT_EQ(LoadChatTemplate(Write("{\"eos_token\": \"x\"}")).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(LoadChatTemplate(Write("{\"chat_template\": [{\"name\": \"x\", "
                                   "\"template\": \"y\"}]}"))
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(LoadChatTemplate(Write("not json")).ok());
  EXPECT_FALSE(LoadChatTemplate("/nonexistent/tokenizer_config.json").ok());
}

}  // namespace
}  // namespace kvfold
