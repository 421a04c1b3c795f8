// Tests for models/tokenizer/unicode.h against Python's unicodedata and
// bytes.decode (tests/golden/tokenizers/unicode_golden.json, written by
// tools/tokenizer/make_unicode_golden.py).
#include "models/tokenizer/unicode.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "gtest/gtest.h"

namespace kvfold::unicode {
namespace {

const nlohmann::json& Golden() {
  static const nlohmann::json* j = [] {
    std::ifstream in("tests/golden/tokenizers/unicode_golden.json");
    EXPECT_TRUE(in.good());
    return new nlohmann::json(nlohmann::json::parse(in));
  }();
  return *j;
}

std::u32string U32(const nlohmann::json& a) {
  std::u32string s;
  for (const auto& v : a) s.push_back(v.get<char32_t>());
  return s;
}

std::string Hex(std::u32string_view s) {
  std::string out;
  for (char32_t c : s) {
    char buf[16];
    snprintf(buf, sizeof(buf), "%04X ", static_cast<unsigned>(c));
    out += buf;
  }
  return out;
}

TEST(Utf8Test, RoundTripsAllScalarValues) {
  std::u32string all;
  for (char32_t c = 0; c <= 0x10FFFF; ++c) {
    if (c < 0xD800 || c > 0xDFFF) all.push_back(c);
  }
  const std::string utf8 = EncodeUtf8(all);
  std::u32string back;
  ASSERT_TRUE(DecodeUtf8(utf8, &back).ok());
  EXPECT_TRUE(back == all);
  EXPECT_TRUE(IsValidUtf8(utf8));
  EXPECT_EQ(ValidUtf8PrefixLength(utf8), utf8.size());
  EXPECT_EQ(Utf8Lossy(utf8), utf8);
  // CharAt walks forward and CharBefore backward through the same values.
  size_t n = 0, i = 0, k = 0;
  for (; i < utf8.size() && k < all.size(); i += n, ++k) {
    if (CharAt(utf8, i, &n) != all[k]) break;
  }
  EXPECT_EQ(k, all.size());
  for (i = utf8.size(); i > 0 && k > 0; i -= n) {
    if (CharBefore(utf8, i, &n) != all[--k]) break;
  }
  EXPECT_EQ(k, 0u);
  EXPECT_EQ(CharAt("\xE6\x97", 0, &n), 0xFFFDu);  // truncated
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(CharBefore("a\x97", 2, &n), 0xFFFDu);  // stray continuation
  EXPECT_EQ(n, 1u);
}

TEST(Utf8Test, RejectsInvalidWithOffset) {
  const char* bad[] = {"ab\xC0\x80", "ab\xED\xA0\x80", "ab\xF4\x90\x80\x80",
                       "ab\x80", "ab\xE2\x82", "ab\xF8\x88\x80\x80\x80"};
  for (const char* s : bad) {
    std::u32string out;
    const absl::Status st = DecodeUtf8(s, &out, "input text");
    ASSERT_FALSE(st.ok()) << s;
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("input text"), std::string::npos) << st;
    EXPECT_NE(st.message().find("byte offset 2"), std::string::npos) << st;
    EXPECT_FALSE(IsValidUtf8(s));
  }
}

TEST(Utf8Test, ValidPrefixStopsBeforeHalfCharacters) {
  const std::string euro = "\xE2\x82\xAC";
  EXPECT_EQ(ValidUtf8PrefixLength("a" + euro.substr(0, 1)), 1u);
  EXPECT_EQ(ValidUtf8PrefixLength("a" + euro.substr(0, 2)), 1u);
  EXPECT_EQ(ValidUtf8PrefixLength("a" + euro), 4u);
  EXPECT_EQ(ValidUtf8PrefixLength("\xF0\x9F\x98"), 0u);
  EXPECT_EQ(ValidUtf8PrefixLength(""), 0u);
}

TEST(Utf8Test, LossyMatchesPythonReplace) {
  int checked = 0;
  for (const auto& e : Golden()["lossy"]) {
    const std::string hex = e["hex"];
    std::string bytes;
    for (size_t i = 0; i < hex.size(); i += 2) {
      bytes.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    EXPECT_EQ(Utf8Lossy(bytes), EncodeUtf8(U32(e["text"]))) << hex;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(CategoryTest, SpotChecks) {
  EXPECT_TRUE(IsLetter(U'a'));
  EXPECT_TRUE(IsLetter(U'\u65E5'));
  EXPECT_TRUE(IsLetter(U'\u0870'));  // new in Unicode 14.0
  EXPECT_FALSE(IsLetter(U'1'));
  EXPECT_TRUE(IsNumber(U'\u0661'));
  EXPECT_TRUE(IsNumber(U'\u00BD'));
  EXPECT_TRUE(IsMark(U'\u0301'));
  EXPECT_TRUE(IsPunctuation(U'\u3002'));
  EXPECT_TRUE(IsSymbol(U'\U0001F600'));
  EXPECT_TRUE(IsSeparator(U'\u3000'));
  EXPECT_TRUE(IsOther(U'\u200B'));
  EXPECT_TRUE(IsOther(U'\U0001E030'));  // unassigned in 14.0
  EXPECT_EQ(Category(U'A'), kLu);
  EXPECT_EQ(Category(U'\u01C5'), kLt);
  EXPECT_EQ(Category(0x10FFFF), kCn);
  for (char32_t c : {0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, 0x2000,
                     0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000}) {
    EXPECT_TRUE(IsWhitespace(c)) << std::hex << static_cast<unsigned>(c);
  }
  for (char32_t c : {0x1C, 0x1F, 0x180E, 0x200B, 0xFEFF, 0x41}) {
    EXPECT_FALSE(IsWhitespace(c)) << std::hex << static_cast<unsigned>(c);
  }
  EXPECT_TRUE(IsWordChar(U'_'));
  EXPECT_TRUE(IsWordChar(U'\u00BD'));
  EXPECT_TRUE(IsWordChar(U'\u24B6'));
  EXPECT_FALSE(IsWordChar(U'-'));
  EXPECT_FALSE(IsWordChar(U'\u200D'));
  uint32_t mask = 0;
  EXPECT_TRUE(ParseCategoryName("Uppercase_Letter", &mask));
  EXPECT_EQ(mask, 1u << kLu);
  EXPECT_TRUE(ParseCategoryName("N", &mask));
  EXPECT_EQ(mask, kMaskN);
  EXPECT_FALSE(ParseCategoryName("Han", &mask));
  EXPECT_EQ(UnicodeVersion(), "14.0.0");
}

TEST(CaseFoldTest, SimpleAndFull) {
  EXPECT_EQ(SimpleFold(U'S'), U's');
  EXPECT_EQ(SimpleFold(U'\u017F'), U's');   // long s
  EXPECT_EQ(SimpleFold(U'\u212A'), U'k');   // Kelvin sign
  EXPECT_EQ(SimpleFold(U'\u03C2'), U'\u03C3');  // final sigma
  EXPECT_EQ(SimpleFold(U'\u1E9E'), U'\u00DF');   // status S
  EXPECT_EQ(SimpleFold(U'\u0130'), U'\u0130');   // only F and T mappings
  EXPECT_EQ(SimpleFold(U'\u00DF'), U'\u00DF');
  std::u32string v = CaseVariants(U'k');
  EXPECT_NE(v.find(U'K'), std::u32string::npos);
  EXPECT_NE(v.find(U'\u212A'), std::u32string::npos);
  int checked = 0;
  for (const auto& e : Golden()["fold"]) {
    char32_t out[3];
    const int n = FullFold(e["c"].get<char32_t>(), out);
    EXPECT_EQ(std::u32string(out, n), U32(e["full"])) << e["c"];
    ++checked;
  }
  EXPECT_GT(checked, 500);
}

TEST(NormalizationTest, MatchesUnicodedata) {
  int checked = 0;
  for (const auto& e : Golden()["normalization"]) {
    const std::u32string s = U32(e["s"]);
    EXPECT_EQ(Hex(Nfc(s)), Hex(U32(e["nfc"]))) << "NFC of " << Hex(s);
    EXPECT_EQ(Hex(Nfd(s)), Hex(U32(e["nfd"]))) << "NFD of " << Hex(s);
    EXPECT_EQ(Hex(Nfkc(s)), Hex(U32(e["nfkc"]))) << "NFKC of " << Hex(s);
    EXPECT_EQ(Hex(Nfkd(s)), Hex(U32(e["nfkd"]))) << "NFKD of " << Hex(s);
    if (IsDefinitelyNfc(s)) {
      EXPECT_EQ(Hex(s), Hex(U32(e["nfc"])));
    }
    ++checked;
  }
  for (const auto& e : Golden()["normalization_identity"]) {
    const std::u32string s(1, e.get<char32_t>());
    EXPECT_EQ(Nfc(s), s);
    EXPECT_EQ(Nfd(s), s);
    EXPECT_EQ(Nfkc(s), s);
    EXPECT_EQ(Nfkd(s), s) << Hex(s);
    ++checked;
  }
  EXPECT_GT(checked, 0x3000);
}

TEST(NormalizationTest, AsciiIsDefinitelyNfc) {
  EXPECT_TRUE(IsDefinitelyNfc(U"Hello, world! \u00E9"));
  EXPECT_FALSE(IsDefinitelyNfc(U"e\u0301"));
  EXPECT_EQ(Nfc(U"e\u0301 and e\u0301"), U"\u00E9 and \u00E9");
}

}  // namespace
}  // namespace kvfold::unicode
