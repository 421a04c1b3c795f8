// kvfold's tokenizer against records made by Hugging Face `tokenizers`
// (tools/tokenizer/make_tokenizer_fixtures.py): ids on every corpus line,
// decoded text with and without special tokens, decode of id sequences that
// cut characters, and streaming decode equal to full decode.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gtest/gtest.h"
#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using nlohmann::json;

json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::string Show(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) s += std::to_string(ids[i]) + " ";
  return ids.size() > 40 ? s + "..." : s;
}

// Streams `ids` through a StreamDecoder; every piece must be valid UTF-8.
std::string Stream(const Tokenizer& t, const std::vector<int32_t>& ids, bool skip) {
  StreamDecoder stream(t, skip);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = stream.Step(id);
    EXPECT_TRUE(unicode::IsValidUtf8(piece));
    out += piece;
  }
  return out + stream.Finish();
}

class TokenizerGoldenTest : public ::testing::TestWithParam<const char*> {};

TEST_P(TokenizerGoldenTest, MatchesTokenizers) {
  const std::string dir = std::string("tests/golden/tokenizers/") + GetParam();
  absl::StatusOr<Tokenizer> t = Tokenizer::FromDirectory(dir);
  ASSERT_TRUE(t.ok()) << t.status();
  const json golden = ReadJson(dir + "/golden.json");
  ASSERT_GT(golden["encode"].size(), 100u);
  int failures = 0;
  for (const json& c : golden["encode"]) {
    const std::string text = c["text"];
    const bool special = c["add_special_tokens"];
    const std::vector<int32_t> want = c["ids"];
    absl::StatusOr<std::vector<int32_t>> got = t->Encode(text, special);
    ASSERT_TRUE(got.ok()) << got.status();
    if (*got != want && ++failures <= 5) {
      ADD_FAILURE() << "encode(add_special_tokens=" << special << ") of \""
                    << text.substr(0, 200) << "\"\n want " << Show(want) << "\n  got "
                    << Show(*got);
    }
    EXPECT_EQ(t->Decode(want, false), c["decoded"].get<std::string>()) << text.substr(0, 200);
    EXPECT_EQ(t->Decode(want, true), c["decoded_skip_special"].get<std::string>())
        << text.substr(0, 200);
    EXPECT_EQ(Stream(*t, want, false), c["decoded"].get<std::string>()) << text.substr(0, 200);
  }
  EXPECT_EQ(failures, 0);
  ASSERT_GT(golden["decode"].size(), 10u);
  for (const json& c : golden["decode"]) {
    const std::vector<int32_t> ids = c["ids"];
    const bool skip = c["skip_special_tokens"];
    EXPECT_EQ(t->Decode(ids, skip), c["text"].get<std::string>()) << Show(ids);
    EXPECT_EQ(Stream(*t, ids, skip), c["text"].get<std::string>()) << Show(ids);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerGoldenTest,
                         ::testing::Values("gpt2_bytelevel", "llama3_bytelevel",
                                           "qwen2_bytelevel", "smollm_bytelevel",
                                           "llama2_sentencepiece", "mistral_sentencepiece",
                                           "tiny256_sentencepiece"));

}  // namespace
}  // namespace kvfold
