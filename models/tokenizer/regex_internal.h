// Internal to //models/tokenizer:regex: the compiled program shared by the
// parser (regex_parser.cc) and the compiler/matcher (regex.cc).
#ifndef KVFOLD_MODELS_TOKENIZER_REGEX_INTERNAL_H_
#define KVFOLD_MODELS_TOKENIZER_REGEX_INTERNAL_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "models/tokenizer/regex.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace regex_internal {

namespace uc = ::kvfold::unicode;

inline constexpr int kInf = -1;
inline constexpr uint32_t kWordCats =
    uc::kMaskL | uc::kMaskM | uc::kMaskN | (1u << uc::kPc);
inline constexpr char32_t kNoChar = 0x110000;  // outside every range
inline constexpr size_t kMaxNodes = 200000;

enum RepMode : uint8_t { kGreedy, kLazy, kPossessive };
enum AssertKind : uint8_t { kBol, kEol, kBegin, kEndText, kEndTextNl, kWordB, kNotWordB };

inline bool IsWordProps(uint8_t p) {
  return ((kWordCats >> (p & uc::kPropCategoryBits)) & 1) || (p & uc::kPropWordExtra);
}

// A character class: the union of its items, then negated if `negated`.
struct CharClass {
  bool negated = false;
  bool icase = false;
  bool white = false;
  bool word = false;
  uint32_t cats = 0;
  std::vector<std::pair<char32_t, char32_t>> ranges;
  std::vector<CharClass> subs;  // nested classes and negated items (\S, \P{L})

  // Set by Finalize(): an ASCII bitmap, and for other code points either a
  // table over the property byte (no non-ASCII ranges, no case folding) or
  // the full evaluation.
  uint64_t ascii[2] = {0, 0};
  bool props_mode = true;
  bool by_props[256] = {};

  bool Eval(char32_t c, uint8_t p) const {
    bool r = ((cats >> (p & uc::kPropCategoryBits)) & 1) ||
             (white && (p & uc::kPropWhiteSpace)) || (word && IsWordProps(p));
    for (size_t i = 0; !r && i < ranges.size(); ++i) {
      r = c >= ranges[i].first && c <= ranges[i].second;
    }
    for (size_t i = 0; !r && i < subs.size(); ++i) r = subs[i].Eval(c, p);
    return r != negated;
  }
  bool EvalFold(char32_t c) const {
    if (Eval(c, uc::Props(c))) return true;
    if (!icase) return false;
    for (char32_t v : uc::CaseVariants(c)) {
      if (v != c && Eval(v, uc::Props(v))) return true;
    }
    return false;
  }
  bool HasNonAsciiRanges() const {
    for (const auto& r : ranges) {
      if (r.second >= 0x80) return true;
    }
    for (const auto& s : subs) {
      if (s.HasNonAsciiRanges()) return true;
    }
    return false;
  }
  void Finalize() {
    for (char32_t c = 0; c < 128; ++c) {
      if (EvalFold(c)) ascii[c >> 6] |= uint64_t{1} << (c & 63);
    }
    props_mode = !icase && !HasNonAsciiRanges();
    if (props_mode) {
      for (int p = 0; p < 256; ++p) by_props[p] = Eval(kNoChar, static_cast<uint8_t>(p));
    }
  }
  bool Match(char32_t c) const {
    if (c < 128) return (ascii[c >> 6] >> (c & 63)) & 1;
    if (props_mode) return by_props[uc::Props(c)];
    return EvalFold(c);
  }
  // Adds an item (from an escape) to this class's union.
  void AddItem(CharClass item) {
    if (!item.negated && item.subs.empty()) {
      cats |= item.cats;
      white |= item.white;
      word |= item.word;
      ranges.insert(ranges.end(), item.ranges.begin(), item.ranges.end());
    } else {
      subs.push_back(std::move(item));
    }
  }
};

// A superset of the code points that can start a match from some node.
struct FirstSet {
  uint64_t ascii[2] = {0, 0};
  bool all_nonascii = false;
  bool by_props[256] = {};

  void AddClass(const CharClass& k) {
    ascii[0] |= k.ascii[0];
    ascii[1] |= k.ascii[1];
    if (!k.props_mode) {
      all_nonascii = true;
    } else {
      for (int p = 0; p < 256; ++p) by_props[p] |= k.by_props[p];
    }
  }
  void AddChar(char32_t c) {
    if (c < 128) {
      ascii[c >> 6] |= uint64_t{1} << (c & 63);
    } else {
      by_props[uc::Props(c)] = true;
    }
  }
  bool Match(char32_t c) const {
    if (c < 128) return (ascii[c >> 6] >> (c & 63)) & 1;
    return all_nonascii || by_props[uc::Props(c)];
  }
};

enum Op : uint8_t {
  kEnd, kSucceed, kChar, kClass, kFoldStr, kRepeat, kAlt, kStar, kStarBack,
  kLook, kAssert
};

struct Node {
  Op op = kEnd;
  RepMode rep = kGreedy;
  bool negate = false;
  AssertKind assert_kind = kBol;
  char32_t ch = 0;
  int next = -1;
  int cls = -1;
  int min = 0, max = kInf;
  int body = -1;       // kStar, kLook
  int loop_id = -1;    // kStar
  int star = -1;       // kStarBack
  int cont_first = -1; // kRepeat: first set of the continuation, or -1
  std::u32string str;  // kFoldStr: full case folding of the literal
  std::vector<int> alts, alt_first;
};

struct Ast {
  enum Kind : uint8_t { kEmpty, kLit, kCls, kConcat, kAltern, kRep, kLookA, kAssertA };
  Kind kind = kEmpty;
  bool icase = false;
  bool negate = false;
  RepMode rep = kGreedy;
  AssertKind assert_kind = kBol;
  char32_t ch = 0;
  int cls = -1;
  int min = 0, max = 0;
  std::vector<Ast> kids;
};

// Parses `pattern` (code points) into *out, adding its classes to prog.
absl::Status Parse(std::u32string pattern, Regex::Program* prog, Ast* out);

}  // namespace regex_internal

struct Regex::Program {
  std::string pattern;
  std::vector<regex_internal::CharClass> classes;
  std::vector<regex_internal::Node> nodes;
  std::vector<regex_internal::FirstSet> firsts;
  int start = -1;
  int start_first = -1;
  int num_loops = 0;
};

}  // namespace kvfold

#endif  // KVFOLD_MODELS_TOKENIZER_REGEX_INTERNAL_H_
