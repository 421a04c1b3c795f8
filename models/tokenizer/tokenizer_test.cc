// Bad tokenizer.json / tokenizer_config.json and bad text give errors that
// name the file and the field; StreamDecoder never emits half a character.
#include "models/tokenizer/tokenizer.h"

#include <string>

#include "gtest/gtest.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

// A small valid byte-level tokenizer: bytes a, b, c, space; merges a+b, ab+c.
// The expected ids and texts below were checked with tokenizers 0.20.3
// (which wants every added-token and ByteLevel field spelled out).
constexpr char kGood[] = R"({
  "version": "1.0",
  "added_tokens": [{"id": 6, "content": "<s>", "special": true}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [6], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel"},
  "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5},
            "merges": ["a b", "ab c"]}
})";

absl::StatusOr<Tokenizer> Load(const std::string& json, const std::string& config = "") {
  return Tokenizer::FromJsonText(json, config, "dir/tokenizer.json");
}

// `from` replaced by `to` in kGood must fail with a message containing
// every one of `parts`.
void ExpectError(const std::string& from, const std::string& to,
                 std::initializer_list<const char*> parts) {
  const std::string json = absl::StrReplaceAll(kGood, {{from, to}});
  ASSERT_NE(json, kGood) << from;
  absl::StatusOr<Tokenizer> t = Load(json);
  ASSERT_FALSE(t.ok()) << "accepted: " << from << " -> " << to;
  for (const char* part : parts) {
    EXPECT_TRUE(absl::StrContains(t.status().message(), part))
        << t.status().message() << " (wanted \"" << part << "\")";
  }
}

TEST(TokenizerTest, GoodFileEncodesAndDecodes) {
  absl::StatusOr<Tokenizer> t = Load(kGood);
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<std::vector<int32_t>> ids = t->Encode("abc ab", true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<int32_t>{6, 5, 3, 4}));
  EXPECT_EQ(t->Decode(*ids, false), "<s>abc ab");
  EXPECT_EQ(t->Decode(*ids, true), "abc ab");
}

TEST(TokenizerTest, MalformedFilesNameFileAndField) {
  ExpectError("\"version\": \"1.0\",", "\"version\": \"1.0\",,", {"dir/tokenizer.json", "not valid JSON", "byte"});
  // Normalizers nested 100000 deep (code walking them would recurse that
  // deep): refused while parsing.
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += R"({"type": "Sequence", "normalizers": [)";
  deep += R"({"type": "NFC"})";
  for (int i = 0; i < 100000; ++i) deep += "]}";
  ExpectError("\"normalizer\": null", "\"normalizer\": " + deep,
              {"dir/tokenizer.json", "nests deeper than 32 levels"});
  ExpectError("\"type\": \"BPE\"", "\"type\": \"WordPiece\"", {"dir/tokenizer.json", "model.type", "WordPiece"});
  ExpectError("\"vocab\": {", "\"vocabulary\": {", {"dir/tokenizer.json", "model", "vocab"});
  ExpectError("\"merges\": [", "\"merged\": [", {"model", "merges"});
  ExpectError("\"a b\", \"ab c\"", "\"a b\", \"ab x\"", {"model.merges[1]", "unknown token \"x\""});
  ExpectError("\"a b\", \"ab c\"", "\"a b\", \"b c\"", {"model.merges[1]", "\"bc\" is not in the vocabulary"});
  ExpectError("\"a b\", \"ab c\"", "\"a b\", \"ab  c\"", {"model.merges[1]", "two tokens"});
  ExpectError("\"a b\", \"ab c\"", "\"a b\", 7", {"model.merges[1]"});
  ExpectError("\"abc\": 5", "\"abc\": -5", {"model.vocab", "abc"});
  ExpectError("\"type\": \"ByteLevel\", \"add_prefix_space\"", "\"type\": \"Whitespace\", \"add_prefix_space\"",
              {"pre_tokenizer", "Whitespace", "not supported"});
  ExpectError("{\"type\": \"ByteLevel\"}", "{\"type\": \"Wordpiece\"}", {"decoder", "Wordpiece"});
  ExpectError("\"normalizer\": null", "\"normalizer\": {\"type\": \"Lowercase\"}", {"normalizer", "Lowercase"});
  ExpectError("\"normalizer\": null",
              "\"normalizer\": {\"type\": \"Replace\", \"pattern\": {\"Regex\": \"(?<=a)b\"}, \"content\": \"x\"}",
              {"normalizer.pattern", "offset"});
  ExpectError("{\"id\": 6, \"content\": \"<s>\"", "{\"id\": 6, \"content\": \"\"", {"added_tokens[0]", "content"});
  ExpectError("{\"id\": 6,", "{\"id\": \"six\",", {"added_tokens[0]", "id"});
  ExpectError("\"ids\": [6]", "\"ids\": [\"x\"]", {"post_processor", "<s>"});
  ExpectError("\"type\": \"TemplateProcessing\"", "\"type\": \"BertProcessing\"", {"post_processor", "BertProcessing"});
  ExpectError("\"model\": {", "\"modle\": {", {"dir/tokenizer.json", "missing \"model\""});
  // Ids that would overflow or allocate gigabytes; a hanging decoder.
  ExpectError("\"abc\": 5", "\"abc\": 2147483647", {"model.vocab", "far beyond"});
  ExpectError("{\"id\": 6,", "{\"id\": 2147483647,", {"added_tokens", "far beyond"});
  ExpectError("\"ids\": [6]", "\"ids\": [4294967295]", {"post_processor", "bad id"});
  ExpectError("{\"type\": \"ByteLevel\"}", "{\"type\": \"Metaspace\", \"replacement\": \"\"}",
              {"decoder", "one character"});
}

TEST(TokenizerTest, BadConfigNamesConfigFile) {
  absl::StatusOr<Tokenizer> t = Load(kGood, "{not json");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "dir/tokenizer_config.json")) << t.status();
  t = Load(kGood, R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": "<nope>"})");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "<nope>")) << t.status();
  // transformers 4.46.3's LlamaTokenizerFast on the same files gives
  // [6, 4, 2] for "ab" (add_eos_token appends the eos token "c").
  t = Load(kGood, R"({"tokenizer_class": "LlamaTokenizerFast", "bos_token": {"content": "<s>"},
                      "add_eos_token": true, "eos_token": "c"})");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(*t->Encode("ab", true), (std::vector<int32_t>{6, 4, 2}));
}

// Expected strings from tokenizers 0.20.3's decoders.Metaspace on the same
// tokens (the fixtures' SentencePiece decoders are Replace+ByteFallback+
// Fuse+Strip, so this one is checked here).
TEST(TokenizerTest, MetaspaceDecoder) {
  for (auto [scheme, ids, want] :
       {std::tuple{"always", std::vector<int32_t>{0, 1, 2, 3}, "Hello world   x"},
        std::tuple{"never", std::vector<int32_t>{0, 1, 2, 3}, " Hello world   x"},
        std::tuple{"first", std::vector<int32_t>{4, 1}, "Hello wor"}}) {
    const std::string json = absl::StrCat(
        R"({"model": {"type": "BPE", "vocab": {"\u2581Hello": 0, "\u2581wor": 1,
             "ld\u2581": 2, "\u2581\u2581x": 3, "\u2581\u2581Hello": 4}, "merges": []},
            "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": ")",
        scheme, R"(", "split": true}})");
    absl::StatusOr<Tokenizer> t = Load(json);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->Decode(ids, false), want) << scheme;
  }
}

// Metaspace pre-tokenizer with split=true and prepend_scheme "first" (the
// fixtures use split=false); ids and texts from tokenizers 0.20.3 on the
// same file.
TEST(TokenizerTest, MetaspaceSplitMatchesTokenizers) {
  const std::string json = R"({"added_tokens": [{"id": 0, "content": "<unk>", "special": true}],
    "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true},
    "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": true},
    "model": {"type": "BPE", "unk_token": "<unk>",
      "vocab": {"<unk>": 0, "\u2581": 1, "a": 2, "b": 3, "\u2581a": 4, "\u2581ab": 5, "ab": 6, "c": 7},
      "merges": ["\u2581 a", "a b", "\u2581a b"]}})";
  absl::StatusOr<Tokenizer> t = Load(json);
  ASSERT_TRUE(t.ok()) << t.status();
  for (auto [text, ids, decoded] :
       {std::tuple{"ab ab  abc", std::vector<int32_t>{5, 5, 1, 5, 7}, "ab ab  abc"},
        std::tuple{"  a", std::vector<int32_t>{1, 4}, " a"},
        std::tuple{"<unk>ab ab", std::vector<int32_t>{0, 6, 5}, "<unk>ab ab"},
        std::tuple{"cab", std::vector<int32_t>{1, 7, 6}, "cab"}}) {
    EXPECT_EQ(*t->Encode(text, false), ids) << text;
    EXPECT_EQ(t->Decode(ids, false), decoded) << text;
  }
}

TEST(TokenizerTest, MissingFilesAndInvalidText) {
  absl::StatusOr<Tokenizer> t = Tokenizer::FromDirectory("/nonexistent/model");
  ASSERT_FALSE(t.ok());
  EXPECT_TRUE(absl::StrContains(t.status().message(), "/nonexistent/model/tokenizer.json"));
  t = Load(kGood);
  ASSERT_TRUE(t.ok());
  for (const char* bad : {"ab\xff", "a\xc3", "\xed\xa0\x80", "ab\xc0\xaf"}) {
    absl::StatusOr<std::vector<int32_t>> ids = t->Encode(bad, false);
    ASSERT_FALSE(ids.ok()) << bad;
    EXPECT_TRUE(absl::StrContains(ids.status().message(), "UTF-8")) << ids.status();
    EXPECT_TRUE(absl::StrContains(ids.status().message(), "offset")) << ids.status();
  }
}

TEST(TokenizerTest, StreamNeverEmitsHalfACharacter) {
  absl::StatusOr<Tokenizer> t = Load(kGood);
  ASSERT_TRUE(t.ok());
  // Unknown ids are skipped; every chunk is valid UTF-8 and the chunks add
  // up to the full decode.
  std::vector<int32_t> ids = {6, 0, 1, 3, 99, 5, 2, 4};
  StreamDecoder stream(*t, false);
  std::string all;
  for (int32_t id : ids) {
    const std::string piece = stream.Step(id);
    EXPECT_TRUE(unicode::IsValidUtf8(piece));
    all += piece;
  }
  all += stream.Finish();
  EXPECT_EQ(all, t->Decode(ids, false));
}

}  // namespace
}  // namespace kvfold
