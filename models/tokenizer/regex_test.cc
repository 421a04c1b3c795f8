// Tests for models/tokenizer/regex.h. Match spans are checked against
// tokenizers 0.20.3 (tests/golden/tokenizers/regex_golden.json, written by
// tools/tokenizer/make_regex_golden.py).
#include "models/tokenizer/regex.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

using Spans = std::vector<std::pair<size_t, size_t>>;

constexpr char kLlama3[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kGpt2[] =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::u32string U32(absl::string_view s) {
  std::u32string out;
  EXPECT_TRUE(unicode::DecodeUtf8(s, &out).ok());
  return out;
}

Regex MustCompile(absl::string_view p) {
  auto r = Regex::Compile(p);
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

// What tokenizers' Split keeps: non-empty matches (invert=True, "removed")
// and the gaps between matches, split at empty matches (invert=False).
void Pieces(const Spans& matches, size_t n, Spans* kept, Spans* gaps) {
  if (n == 0) return;
  size_t prev = 0;
  for (const auto& m : matches) {
    if (prev != m.first) gaps->push_back({prev, m.first});
    if (m.first != m.second) kept->push_back(m);
    prev = m.second;
  }
  if (prev != n) gaps->push_back({prev, n});
}

Spans FromJson(const nlohmann::json& a) {
  Spans s;
  for (const auto& p : a) s.push_back({p[0].get<size_t>(), p[1].get<size_t>()});
  return s;
}

std::string Show(const Spans& s) {
  std::string out;
  for (const auto& p : s) out += "[" + std::to_string(p.first) + "," + std::to_string(p.second) + ")";
  return out;
}

TEST(RegexGoldenTest, MatchesTokenizers) {
  std::ifstream in("tests/golden/tokenizers/regex_golden.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json j = nlohmann::json::parse(in);
  std::vector<Regex> regexes;
  for (const auto& p : j["patterns"]) regexes.push_back(MustCompile(p.get<std::string>()));
  std::vector<std::u32string> texts;
  for (const auto& t : j["texts"]) texts.push_back(U32(t.get<std::string>()));
  int checked = 0, failed = 0;
  for (const auto& r : j["results"]) {
    const size_t pi = r[0], ti = r[1];
    Spans all, kept, gaps;
    regexes[pi].FindAll(texts[ti], &all);
    Pieces(all, texts[ti].size(), &kept, &gaps);
    const Spans want_kept = FromJson(r[2]), want_gaps = FromJson(r[3]);
    ++checked;
    if (kept != want_kept || gaps != want_gaps) {
      if (++failed <= 20) {
        ADD_FAILURE() << "pattern " << j["patterns"][pi] << "\ntext " << j["texts"][ti]
                      << "\nmatches " << Show(kept) << "\nwant    " << Show(want_kept)
                      << "\ngaps    " << Show(gaps) << "\nwant    " << Show(want_gaps);
      }
    }
  }
  EXPECT_EQ(failed, 0);
  EXPECT_GT(checked, 5000);
}

TEST(RegexTest, EmptyMatchesFollowOnigFindIter) {
  Spans m;
  MustCompile("a*").FindAll(U"bab", &m);
  EXPECT_EQ(m, (Spans{{0, 0}, {1, 2}, {3, 3}}));
  MustCompile("x*").FindAll(U"", &m);
  EXPECT_EQ(m, (Spans{{0, 0}}));
  MustCompile(R"(\s+(?!\S)|\s+)").FindAll(U"a   b  ", &m);
  EXPECT_EQ(m, (Spans{{1, 3}, {3, 4}, {5, 7}}));
}

TEST(RegexTest, SearchSeesWholeText) {
  const Regex r = MustCompile("^a");
  size_t b, e;
  EXPECT_FALSE(r.Search(U"ba", 1, &b, &e));
  EXPECT_TRUE(r.Search(U"b\na", 1, &b, &e));
  EXPECT_EQ(b, 2u);
}

TEST(RegexTest, CaseInsensitiveUsesFolding) {
  Spans m;
  MustCompile("(?i:'s|'k)").FindAll(U"'S '\u017F '\u212A 'K '\uFB05", &m);
  EXPECT_EQ(m, (Spans{{0, 2}, {3, 5}, {6, 8}, {9, 11}}));
  MustCompile("(?i:ss)").FindAll(U"\u00DF SS \u1E9E", &m);
  EXPECT_EQ(m, (Spans{{0, 1}, {2, 4}, {5, 6}}));
}

TEST(RegexTest, CompileErrorsNameThePosition) {
  const char* bad[] = {"(?<=a)b", "(a", "a)", "[a-", "\\p{Han}", "(?>a)", "a**",
                       "\\1", "[a&&b]", "*a", "(?m:a)", "[z-a]", "\\x{110000}"};
  for (const char* p : bad) {
    auto r = Regex::Compile(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_NE(r.status().message().find("offset"), std::string::npos) << r.status();
  }
}

// Long runs that would be quadratic for a naive backtracker. The expected
// spans are what tokenizers 0.20.3's Split(Regex(p), "removed", invert=True)
// returns for the same inputs (checked once by hand; too large to commit as
// golden data).
TEST(RegexTest, PathologicalRunsAreLinear) {
  const Regex llama = MustCompile(kLlama3);
  const Regex gpt2 = MustCompile(kGpt2);
  Spans m;
  std::u32string spaces(100000, U' ');
  llama.FindAll(spaces, &m);
  EXPECT_EQ(m, (Spans{{0, 100000}}));
  spaces += U"x";
  llama.FindAll(spaces, &m);
  EXPECT_EQ(m, (Spans{{0, 99999}, {99999, 100001}}));
  gpt2.FindAll(spaces, &m);
  EXPECT_EQ(m, (Spans{{0, 99999}, {99999, 100001}}));
  std::u32string newlines(50000, U' ');
  newlines += std::u32string(50000, U'\n') + std::u32string(50000, U' ');
  llama.FindAll(newlines, &m);
  EXPECT_EQ(m, (Spans{{0, 100000}, {100000, 150000}}));
  const std::u32string digits(100000, U'7');
  llama.FindAll(digits, &m);
  EXPECT_EQ(m.size(), 33334u);
  gpt2.FindAll(digits, &m);
  EXPECT_EQ(m, (Spans{{0, 100000}}));
  const std::u32string letters(1000000, U'\u00E9');
  llama.FindAll(letters, &m);
  EXPECT_EQ(m, (Spans{{0, 1000000}}));
  std::u32string punct(100000, U'!');
  llama.FindAll(punct, &m);
  EXPECT_EQ(m, (Spans{{0, 100000}}));
}

std::string SyntheticText(size_t bytes) {
  const char* words[] = {"the", "of", "and", "tokenizer", "It's", "they'll", "Hello",
                         "world", "2024", "1234567", "caf\xC3\xA9", "na\xC3\xAFve",
                         "\xE6\x97\xA5\xE6\x9C\xAC", "(x)", "a+b=c;", "\xF0\x9F\x98\x80"};
  const char* seps[] = {" ", " ", " ", " ", ", ", ". ", "\n", "  ", "\t", "\r\n", " -- "};
  std::mt19937 rng(7);
  std::string out;
  while (out.size() < bytes) {
    out += words[rng() % 16];
    out += seps[rng() % 11];
  }
  return out;
}

std::string EnglishProse(size_t bytes) {
  const std::string para =
      "It was the best of times, it was the worst of times, it was the age of "
      "wisdom, it was the age of foolishness. We'd all been told that they'll "
      "come back in 1859, and I'm sure you've heard the rest: 42 chapters!\n\n";
  std::string out;
  while (out.size() < bytes) out += para;
  return out;
}

double MBps(const Regex& r, const std::string& utf8, size_t* count) {
  const std::u32string text = U32(utf8);
  Spans m;
  double best = 1e30;
  for (int run = 0; run < 2; ++run) {  // the first run also grows `m`
    const auto t0 = std::chrono::steady_clock::now();
    r.FindAll(text, &m);
    best = std::min(best, std::chrono::duration<double>(
                              std::chrono::steady_clock::now() - t0).count());
  }
  *count = m.size();
  return utf8.size() / 1e6 / best;
}

TEST(RegexBenchmark, PrintsThroughput) {
  const Regex llama = MustCompile(kLlama3);
  struct Case {
    const char* name;
    std::string text;
  } cases[] = {
      {"english prose", EnglishProse(10 << 20)},
      {"synthetic mixed", SyntheticText(10 << 20)},
      {"1M spaces", std::string(1000000, ' ')},
      {"1M digits", std::string(1000000, '7')},
      {"1M letters", std::string(1000000, 'a')},
  };
  for (const Case& c : cases) {
    size_t count = 0;
    const double mbps = MBps(llama, c.text, &count);
    printf("Llama 3 pattern, %-16s %8.1f MB/s (%zu matches)\n", c.name, mbps, count);
    EXPECT_GT(count, 0u);
  }
}

}  // namespace
}  // namespace kvfold
