#include "models/tokenizer/unicode.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvfold::unicode {
namespace {

#include "models/tokenizer/unicode_tables.inc"

constexpr char32_t kMaxCodePoint = 0x10FFFF;
constexpr char32_t kReplacement = 0xFFFD;

// ---- Two-stage tables built once from the generated runs -----------------

struct TwoStage {
  std::vector<uint16_t> stage1;  // (c >> 8) -> block index
  std::vector<uint8_t> stage2;   // block * 256 + (c & 0xFF) -> value

  template <size_t N>
  explicit TwoStage(const uint32_t (&runs)[N]) {
    stage1.resize((kMaxCodePoint + 1) >> 8);
    std::map<std::vector<uint8_t>, uint16_t> seen;
    size_t r = 0;
    std::vector<uint8_t> block(256);
    for (uint32_t b = 0; b < stage1.size(); ++b) {
      for (uint32_t i = 0; i < 256; ++i) {
        const uint32_t c = (b << 8) | i;
        while (r + 1 < N && (runs[r + 1] >> 8) <= c) ++r;
        block[i] = static_cast<uint8_t>(runs[r] & 0xFF);
      }
      auto it = seen.find(block);
      if (it == seen.end()) {
        const uint16_t idx = static_cast<uint16_t>(seen.size());
        it = seen.emplace(block, idx).first;
        stage2.insert(stage2.end(), block.begin(), block.end());
      }
      stage1[b] = it->second;
    }
  }
  uint8_t Get(char32_t c) const {
    if (c > kMaxCodePoint) return 0;
    return stage2[static_cast<size_t>(stage1[c >> 8]) * 256 + (c & 0xFF)];
  }
};

const TwoStage& PropTable() {
  static const TwoStage* t = new TwoStage(kPropRuns);
  return *t;
}
const TwoStage& CccTable() {
  static const TwoStage* t = new TwoStage(kCccRuns);
  return *t;
}

// ---- UTF-8 core -----------------------------------------------------------

// Decodes one sequence at s[i]. Returns the length (>= 1) and sets *c on
// success; on failure returns -k where k >= 1 is the length of the maximal
// invalid subpart (k bytes to replace by one U+FFFD), or 0 when the input
// ends inside an otherwise valid sequence (*c untouched; k via *partial).
int DecodeOne(const unsigned char* s, size_t n, size_t i, char32_t* c,
              int* partial) {
  const unsigned char b0 = s[i];
  if (b0 < 0x80) {
    *c = b0;
    return 1;
  }
  int len;
  unsigned char lo = 0x80, hi = 0xBF;
  char32_t v;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    v = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    v = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;   // overlong
    if (b0 == 0xED) hi = 0x9F;   // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    v = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;   // overlong
    if (b0 == 0xF4) hi = 0x8F;   // > U+10FFFF
  } else {
    return -1;  // stray continuation, C0, C1, F5..FF
  }
  for (int k = 1; k < len; ++k) {
    if (i + k >= n) {
      *partial = k;
      return 0;
    }
    const unsigned char b = s[i + k];
    if (b < lo || b > hi) return -k;
    lo = 0x80;
    hi = 0xBF;
    v = (v << 6) | (b & 0x3F);
  }
  *c = v;
  return len;
}

}  // namespace

absl::string_view UnicodeVersion() { return kUnicodeVersion; }

char32_t CharAt(absl::string_view text, size_t pos, size_t* length) {
  char32_t c = 0xFFFD;
  int partial = 0;
  const int r = DecodeOne(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
                          pos, &c, &partial);
  *length = r > 0 ? size_t(r) : 1;
  return r > 0 ? c : 0xFFFD;
}

char32_t CharBefore(absl::string_view text, size_t end, size_t* length) {
  size_t begin = end - 1;
  while (begin > 0 && end - begin < 4 &&
         (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) {
    --begin;
  }
  const char32_t c = CharAt(text, begin, length);
  if (begin + *length == end) return c;
  *length = 1;
  return 0xFFFD;
}

absl::Status DecodeUtf8(absl::string_view utf8, std::u32string* out,
                        absl::string_view what) {
  out->clear();
  out->reserve(utf8.size());
  const auto* s = reinterpret_cast<const unsigned char*>(utf8.data());
  const size_t n = utf8.size();
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if (w & 0x8080808080808080ull) break;
      for (int k = 0; k < 8; ++k) out->push_back(s[i + k]);
      i += 8;
    }
    if (i >= n) break;
    char32_t c;
    int partial = 0;
    const int r = DecodeOne(s, n, i, &c, &partial);
    if (r <= 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid UTF-8 in ", what, " at byte offset ", i,
          r == 0 ? " (truncated sequence)" : ""));
    }
    out->push_back(c);
    i += r;
  }
  return absl::OkStatus();
}

bool IsValidUtf8(absl::string_view s) {
  return ValidUtf8PrefixLength(s) == s.size();
}

void AppendUtf8(char32_t c, std::string* out) {
  if (c < 0x80) {
    out->push_back(static_cast<char>(c));
    return;
  }
  if ((c >= 0xD800 && c <= 0xDFFF) || c > kMaxCodePoint) c = kReplacement;
  char buf[4];
  int len;
  if (c < 0x800) {
    buf[0] = static_cast<char>(0xC0 | (c >> 6));
    len = 2;
  } else if (c < 0x10000) {
    buf[0] = static_cast<char>(0xE0 | (c >> 12));
    buf[1] = static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    len = 3;
  } else {
    buf[0] = static_cast<char>(0xF0 | (c >> 18));
    buf[1] = static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    buf[2] = static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    len = 4;
  }
  buf[len - 1] = static_cast<char>(0x80 | (c & 0x3F));
  out->append(buf, len);
}

std::string EncodeUtf8(std::u32string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) AppendUtf8(c, &out);
  return out;
}

size_t ValidUtf8PrefixLength(absl::string_view str) {
  const auto* s = reinterpret_cast<const unsigned char*>(str.data());
  const size_t n = str.size();
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    char32_t c;
    int partial = 0;
    const int r = DecodeOne(s, n, i, &c, &partial);
    if (r <= 0) return i;
    i += r;
  }
  return n;
}

std::string Utf8Lossy(absl::string_view bytes) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    if (s[i] < 0x80) {
      out.push_back(static_cast<char>(s[i++]));
      continue;
    }
    char32_t c;
    int partial = 0;
    const int r = DecodeOne(s, n, i, &c, &partial);
    if (r > 0) {
      out.append(bytes.data() + i, r);
      i += r;
    } else {
      AppendUtf8(kReplacement, &out);
      i += (r == 0) ? partial : -r;
    }
  }
  return out;
}

// ---- Categories -------------------------------------------------------------

uint8_t Props(char32_t c) { return PropTable().Get(c); }

bool IsLetter(char32_t c) { return (kMaskL >> Category(c)) & 1; }
bool IsNumber(char32_t c) { return (kMaskN >> Category(c)) & 1; }
bool IsMark(char32_t c) { return (kMaskM >> Category(c)) & 1; }
bool IsPunctuation(char32_t c) { return (kMaskP >> Category(c)) & 1; }
bool IsSymbol(char32_t c) { return (kMaskS >> Category(c)) & 1; }
bool IsSeparator(char32_t c) { return (kMaskZ >> Category(c)) & 1; }
bool IsOther(char32_t c) { return (kMaskC >> Category(c)) & 1; }
bool IsWhitespace(char32_t c) { return Props(c) & kPropWhiteSpace; }
bool IsWordChar(char32_t c) {
  const uint8_t p = Props(c);
  constexpr uint32_t kWord = kMaskL | kMaskM | kMaskN | (1u << kPc);
  return ((kWord >> (p & kPropCategoryBits)) & 1) || (p & kPropWordExtra);
}

bool ParseCategoryName(absl::string_view name, uint32_t* mask) {
  std::string key;
  for (char ch : name) {
    if (ch == '_' || ch == '-' || ch == ' ') continue;
    key.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(ch))));
  }
  struct Entry {
    const char* short_name;
    const char* long_name;
    uint32_t mask;
  };
  static const Entry kEntries[] = {
      {"l", "letter", kMaskL},
      {"lc", "casedletter", (1u << kLu) | (1u << kLl) | (1u << kLt)},
      {"l&", "", (1u << kLu) | (1u << kLl) | (1u << kLt)},
      {"lu", "uppercaseletter", 1u << kLu},
      {"ll", "lowercaseletter", 1u << kLl},
      {"lt", "titlecaseletter", 1u << kLt},
      {"lm", "modifierletter", 1u << kLm},
      {"lo", "otherletter", 1u << kLo},
      {"m", "mark", kMaskM},
      {"mn", "nonspacingmark", 1u << kMn},
      {"mc", "spacingmark", 1u << kMc},
      {"me", "enclosingmark", 1u << kMe},
      {"n", "number", kMaskN},
      {"nd", "decimalnumber", 1u << kNd},
      {"nl", "letternumber", 1u << kNl},
      {"no", "othernumber", 1u << kNo},
      {"p", "punctuation", kMaskP},
      {"pc", "connectorpunctuation", 1u << kPc},
      {"pd", "dashpunctuation", 1u << kPd},
      {"ps", "openpunctuation", 1u << kPs},
      {"pe", "closepunctuation", 1u << kPe},
      {"pi", "initialpunctuation", 1u << kPi},
      {"pf", "finalpunctuation", 1u << kPf},
      {"po", "otherpunctuation", 1u << kPo},
      {"s", "symbol", kMaskS},
      {"sm", "mathsymbol", 1u << kSm},
      {"sc", "currencysymbol", 1u << kSc},
      {"sk", "modifiersymbol", 1u << kSk},
      {"so", "othersymbol", 1u << kSo},
      {"z", "separator", kMaskZ},
      {"zs", "spaceseparator", 1u << kZs},
      {"zl", "lineseparator", 1u << kZl},
      {"zp", "paragraphseparator", 1u << kZp},
      {"c", "other", kMaskC},
      {"cc", "control", 1u << kCc},
      {"cf", "format", 1u << kCf},
      {"cs", "surrogate", 1u << kCs},
      {"co", "privateuse", 1u << kCo},
      {"cn", "unassigned", 1u << kCn},
      {"any", "", (1u << kNumGeneralCategories) - 1},
  };
  for (const Entry& e : kEntries) {
    if (key == e.short_name || (e.long_name[0] != '\0' && key == e.long_name)) {
      *mask = e.mask;
      return true;
    }
  }
  return false;
}

// ---- Case folding -------------------------------------------------------------

char32_t SimpleFold(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const auto* begin = std::begin(kSimpleFold);
  const auto* end = std::end(kSimpleFold);
  const auto* it = std::lower_bound(
      begin, end, c, [](const uint32_t(&e)[2], char32_t v) { return e[0] < v; });
  return (it != end && (*it)[0] == c) ? (*it)[1] : c;
}

int FullFold(char32_t c, char32_t out[3]) {
  if (c >= 0x80) {
    const auto* begin = std::begin(kFullFold);
    const auto* end = std::end(kFullFold);
    const auto* it = std::lower_bound(
        begin, end, c, [](const uint32_t(&e)[3], char32_t v) { return e[0] < v; });
    if (it != end && (*it)[0] == c) {
      for (uint32_t k = 0; k < (*it)[2]; ++k) out[k] = kFullFoldData[(*it)[1] + k];
      return static_cast<int>((*it)[2]);
    }
  }
  out[0] = SimpleFold(c);
  return 1;
}

std::u32string CaseVariants(char32_t c) {
  static const auto* orbits = [] {
    auto* m = new std::map<char32_t, std::u32string>();
    for (const auto& e : kSimpleFold) (*m)[e[1]].push_back(e[0]);
    return m;
  }();
  const char32_t f = SimpleFold(c);
  std::u32string out(1, f);
  auto it = orbits->find(f);
  if (it != orbits->end()) out += it->second;
  return out;
}

// ---- Normalization --------------------------------------------------------------

namespace {

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161,
                   kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28,
              kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

void Decompose(std::u32string_view s, bool compat, std::u32string* out) {
  for (char32_t c : s) {
    if (c >= kSBase && c < kSBase + kSCount) {
      const int si = static_cast<int>(c - kSBase);
      out->push_back(kLBase + si / kNCount);
      out->push_back(kVBase + (si % kNCount) / kTCount);
      if (si % kTCount != 0) out->push_back(kTBase + si % kTCount);
      continue;
    }
    if (c < 0xA0 || !(compat || (Props(c) & kPropNotNfcSafe))) {
      out->push_back(c);
      continue;
    }
    const auto* begin = std::begin(kDecomp);
    const auto* end = std::end(kDecomp);
    const auto* it = std::lower_bound(
        begin, end, c, [](const uint32_t(&e)[5], char32_t v) { return e[0] < v; });
    if (it == end || (*it)[0] != c) {
      out->push_back(c);
      continue;
    }
    const uint32_t off = compat ? (*it)[3] : (*it)[1];
    const uint32_t len = compat ? (*it)[4] : (*it)[2];
    if (len == 0) {
      out->push_back(c);
    } else {
      out->append(reinterpret_cast<const char32_t*>(kDecompData) + off, len);
    }
  }
  // Canonical ordering: stable sort of each run of non-starters by class.
  const size_t n = out->size();
  for (size_t i = 1; i < n; ++i) {
    const int cc = CombiningClass((*out)[i]);
    if (cc == 0) continue;
    size_t j = i;
    const char32_t c = (*out)[i];
    while (j > 0) {
      const int prev = CombiningClass((*out)[j - 1]);
      if (prev <= cc) break;
      (*out)[j] = (*out)[j - 1];
      --j;
    }
    (*out)[j] = c;
  }
}

// The primary composite of (a, b), or 0.
char32_t ComposePair(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 &&
      b > kTBase && b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const uint64_t key = (static_cast<uint64_t>(a) << 32) | b;
  const auto* begin = std::begin(kCompose);
  const auto* end = std::end(kCompose);
  const auto* it = std::lower_bound(
      begin, end, key, [](const uint32_t(&e)[3], uint64_t v) {
        return ((static_cast<uint64_t>(e[0]) << 32) | e[1]) < v;
      });
  if (it != end && (*it)[0] == a && (*it)[1] == b) return (*it)[2];
  return 0;
}

void Compose(std::u32string* s) {
  std::u32string& d = *s;
  size_t out = 0;
  size_t starter = std::u32string::npos;
  int last_cc = 0;
  for (size_t i = 0; i < d.size(); ++i) {
    const char32_t c = d[i];
    const int cc = CombiningClass(c);
    if (starter != std::u32string::npos) {
      const bool adjacent = (out == starter + 1);
      if (adjacent || (last_cc != 0 && last_cc < cc)) {
        const char32_t composite = ComposePair(d[starter], c);
        if (composite != 0) {
          d[starter] = composite;
          continue;
        }
      }
    }
    if (cc == 0) {
      starter = out;
      last_cc = 0;
    } else {
      last_cc = cc;
    }
    d[out++] = c;
  }
  d.resize(out);
}

std::u32string Normalize(std::u32string_view s, bool compat, bool compose) {
  std::u32string out;
  out.reserve(s.size());
  Decompose(s, compat, &out);
  if (compose) Compose(&out);
  return out;
}

bool NfcSafe(char32_t c) { return c < 0x300 || !(Props(c) & kPropNotNfcSafe); }

}  // namespace

int CombiningClass(char32_t c) {
  if (c < 0x300) return 0;
  return CccTable().Get(c);
}

bool IsDefinitelyNfc(std::u32string_view s) {
  for (char32_t c : s) {
    if (!NfcSafe(c)) return false;
  }
  return true;
}

std::u32string Nfc(std::u32string_view s) {
  // A normalization boundary lies before every NFC-safe code point, so only
  // the segments around unsafe code points go through the full algorithm.
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  const size_t n = s.size();
  while (i < n) {
    size_t j = i;
    while (j < n && NfcSafe(s[j])) ++j;
    if (j == n) {
      out.append(s.substr(i));
      break;
    }
    const size_t seg = (j > i) ? j - 1 : j;  // the starter before, if safe
    out.append(s.substr(i, seg - i));
    size_t k = j + 1;
    while (k < n && !NfcSafe(s[k])) ++k;
    out += Normalize(s.substr(seg, k - seg), /*compat=*/false, /*compose=*/true);
    i = k;
  }
  return out;
}
std::u32string Nfd(std::u32string_view s) { return Normalize(s, false, false); }
std::u32string Nfkc(std::u32string_view s) { return Normalize(s, true, true); }
std::u32string Nfkd(std::u32string_view s) { return Normalize(s, true, false); }

}  // namespace kvfold::unicode
