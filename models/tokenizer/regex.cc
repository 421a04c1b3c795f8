#include "models/tokenizer/regex.h"

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace {

namespace uc = ::kvfold::unicode;

constexpr int kInf = -1;
constexpr uint32_t kWordCats =
    uc::kMaskL | uc::kMaskM | uc::kMaskN | (1u << uc::kPc);
constexpr char32_t kNoChar = 0x110000;  // outside every range
constexpr size_t kMaxNodes = 200000;

enum RepMode : uint8_t { kGreedy, kLazy, kPossessive };
enum AssertKind : uint8_t { kBol, kEol, kBegin, kEndText, kEndTextNl, kWordB, kNotWordB };

bool IsWordProps(uint8_t p) {
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

}  // namespace

struct Regex::Program {
  std::string pattern;
  std::vector<CharClass> classes;
  std::vector<Node> nodes;
  std::vector<FirstSet> firsts;
  int start = -1;
  int start_first = -1;
  int num_loops = 0;
};

namespace {

bool IsHex(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
int HexVal(char32_t c) {
  return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

// ---- Parser ------------------------------------------------------------------

class Parser {
 public:
  Parser(std::u32string p, Regex::Program* prog) : p_(std::move(p)), prog_(prog) {}

  absl::Status Parse(Ast* out) {
    absl::Status st = ParseAlt(false, out);
    if (!st.ok()) return st;
    if (pos_ < p_.size()) return Error(pos_, "unmatched ')'");
    return absl::OkStatus();
  }

 private:
  struct Esc {
    enum Kind { kCharE, kItem, kAssertE } kind = kCharE;
    char32_t ch = 0;
    CharClass item;
    AssertKind assert_kind = kBol;
  };

  absl::Status Error(size_t at, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "regex: ", what, " at offset ", at, " in pattern \"", prog_->pattern, "\""));
  }
  bool Peek(size_t off, char32_t c) const {
    return pos_ + off < p_.size() && p_[pos_ + off] == c;
  }
  bool LooksAt(std::u32string_view s) const {
    return p_.compare(pos_, s.size(), s) == 0;
  }

  int AddClass(CharClass k) {
    k.Finalize();
    prog_->classes.push_back(std::move(k));
    return static_cast<int>(prog_->classes.size()) - 1;
  }

  absl::Status ParseAlt(bool icase, Ast* out) {
    out->kind = Ast::kAltern;
    for (;;) {
      Ast seq;
      absl::Status st = ParseSeq(icase, &seq);
      if (!st.ok()) return st;
      out->kids.push_back(std::move(seq));
      if (pos_ < p_.size() && p_[pos_] == '|') {
        ++pos_;
        continue;
      }
      break;
    }
    if (out->kids.size() == 1) {
      Ast only = std::move(out->kids[0]);
      *out = std::move(only);
    }
    return absl::OkStatus();
  }

  absl::Status ParseSeq(bool icase, Ast* out) {
    out->kind = Ast::kConcat;
    while (pos_ < p_.size()) {
      const char32_t c = p_[pos_];
      if (c == '|' || c == ')') break;
      // (?i) and (?-i) apply to the rest of the enclosing group, later
      // alternatives included (Ruby: "a(?i)b|c" is "a(?i:b|c)").
      if (LooksAt(U"(?i)") || LooksAt(U"(?-i)")) {
        const bool on = p_[pos_ + 2] == 'i';
        pos_ += on ? 4 : 5;
        Ast rest;
        absl::Status st = ParseAlt(on, &rest);
        if (!st.ok()) return st;
        out->kids.push_back(std::move(rest));
        break;
      }
      Ast atom;
      absl::Status st = ParseAtom(icase, &atom);
      if (!st.ok()) return st;
      st = ParseQuantifier(&atom);
      if (!st.ok()) return st;
      out->kids.push_back(std::move(atom));
    }
    return absl::OkStatus();
  }

  // Parses {n}, {n,}, {,m}, {n,m} at pos_; false (pos_ unchanged) if the
  // text there is not an interval (then '{' is a literal, as in Ruby).
  bool ParseInterval(int* min, int* max) {
    size_t i = pos_ + 1;
    auto number = [&](int* v) {
      size_t start = i;
      long x = 0;
      while (i < p_.size() && p_[i] >= '0' && p_[i] <= '9' && x <= 100000) {
        x = x * 10 + (p_[i++] - '0');
      }
      *v = static_cast<int>(x);
      return i > start;
    };
    int lo = 0, hi = 0;
    const bool has_lo = number(&lo);
    if (i < p_.size() && p_[i] == '}') {
      if (!has_lo) return false;
      *min = *max = lo;
    } else if (i < p_.size() && p_[i] == ',') {
      ++i;
      const bool has_hi = number(&hi);
      if (!has_lo && !has_hi) return false;
      if (i >= p_.size() || p_[i] != '}') return false;
      *min = has_lo ? lo : 0;
      *max = has_hi ? hi : kInf;
    } else {
      return false;
    }
    pos_ = i + 1;
    return true;
  }

  absl::Status ParseQuantifier(Ast* atom) {
    if (pos_ >= p_.size()) return absl::OkStatus();
    const size_t at = pos_;
    const char32_t c = p_[pos_];
    int min, max;
    bool interval = false;
    if (c == '?') {
      min = 0, max = 1;
    } else if (c == '*') {
      min = 0, max = kInf;
    } else if (c == '+') {
      min = 1, max = kInf;
    } else if (c == '{' && ParseInterval(&min, &max)) {
      interval = true;
    } else {
      return absl::OkStatus();
    }
    if (!interval) ++pos_;
    if (atom->kind == Ast::kLookA || atom->kind == Ast::kAssertA ||
        atom->kind == Ast::kEmpty) {
      return Error(at, "quantifier on an assertion or empty group is not supported");
    }
    if (max != kInf && max < min) return Error(at, "invalid interval {n,m} with n > m");
    if (min > 1000 || max > 1000) return Error(at, "interval bound over 1000 is not supported");
    RepMode rep = kGreedy;
    if (Peek(0, '?')) {
      if (interval && min == max) {
        return Error(pos_, "'{n}?' (Ruby: optional {n}) is not supported");
      }
      rep = kLazy;
      ++pos_;
    } else if (Peek(0, '+')) {
      if (interval) return Error(pos_, "'+' after an interval is not supported");
      rep = kPossessive;
      ++pos_;
    }
    if (pos_ < p_.size() && (p_[pos_] == '?' || p_[pos_] == '*' || p_[pos_] == '+')) {
      return Error(pos_, "nested quantifier is not supported");
    }
    Ast rep_ast;
    rep_ast.kind = Ast::kRep;
    rep_ast.min = min;
    rep_ast.max = max;
    rep_ast.rep = rep;
    rep_ast.kids.push_back(std::move(*atom));
    *atom = std::move(rep_ast);
    return absl::OkStatus();
  }

  absl::Status ParseGroupBody(bool icase, Ast* out) {
    absl::Status st = ParseAlt(icase, out);
    if (!st.ok()) return st;
    if (!Peek(0, ')')) return Error(pos_, "missing ')'");
    ++pos_;
    return absl::OkStatus();
  }

  absl::Status ParseAtom(bool icase, Ast* out) {
    const size_t at = pos_;
    const char32_t c = p_[pos_];
    switch (c) {
      case '(': {
        ++pos_;
        if (!Peek(0, '?')) return ParseGroupBody(icase, out);
        if (LooksAt(U"?:")) {
          pos_ += 2;
          return ParseGroupBody(icase, out);
        }
        if (LooksAt(U"?i:") || LooksAt(U"?-i:")) {
          const bool on = p_[pos_ + 1] == 'i';
          pos_ += on ? 3 : 4;
          return ParseGroupBody(on, out);
        }
        if (LooksAt(U"?=") || LooksAt(U"?!")) {
          out->kind = Ast::kLookA;
          out->negate = p_[pos_ + 1] == '!';
          pos_ += 2;
          out->kids.emplace_back();
          return ParseGroupBody(icase, &out->kids[0]);
        }
        if (LooksAt(U"?<=") || LooksAt(U"?<!")) return Error(at, "lookbehind is not supported");
        if (LooksAt(U"?<") || LooksAt(U"?'")) {
          const char32_t close = p_[pos_ + 1] == '<' ? '>' : '\'';
          size_t i = pos_ + 2;
          while (i < p_.size() && p_[i] != close) ++i;
          if (i >= p_.size() || i == pos_ + 2) return Error(at, "invalid group name");
          pos_ = i + 1;
          return ParseGroupBody(icase, out);
        }
        if (LooksAt(U"?>")) return Error(at, "atomic group is not supported");
        return Error(at, "unsupported group construct or option (only (?:, (?i:, (?-i:, (?=, (?!, (?<name>)");
      }
      case '[': {
        ++pos_;
        CharClass k;
        absl::Status st = ParseClassBody(&k);
        if (!st.ok()) return st;
        k.icase = icase;
        out->kind = Ast::kCls;
        out->cls = AddClass(std::move(k));
        return absl::OkStatus();
      }
      case '.': {
        ++pos_;
        CharClass k;
        k.negated = true;
        k.ranges.push_back({'\n', '\n'});
        out->kind = Ast::kCls;
        out->cls = AddClass(std::move(k));
        return absl::OkStatus();
      }
      case '^':
      case '$':
        ++pos_;
        out->kind = Ast::kAssertA;
        out->assert_kind = c == '^' ? kBol : kEol;
        return absl::OkStatus();
      case '?':
      case '*':
      case '+':
        return Error(at, "target of repeat operator is not specified");
      case '{': {
        int a, b;
        const size_t save = pos_;
        if (ParseInterval(&a, &b)) {
          pos_ = save;
          return Error(at, "target of repeat operator is not specified");
        }
        break;
      }
      case '\\': {
        ++pos_;
        Esc e;
        absl::Status st = ParseEscape(false, &e);
        if (!st.ok()) return st;
        if (e.kind == Esc::kAssertE) {
          out->kind = Ast::kAssertA;
          out->assert_kind = e.assert_kind;
        } else if (e.kind == Esc::kItem) {
          e.item.icase = icase;
          out->kind = Ast::kCls;
          out->cls = AddClass(std::move(e.item));
        } else {
          out->kind = Ast::kLit;
          out->ch = e.ch;
          out->icase = icase;
        }
        return absl::OkStatus();
      }
      default:
        break;
    }
    ++pos_;
    out->kind = Ast::kLit;
    out->ch = c;
    out->icase = icase;
    return absl::OkStatus();
  }

  // After '['.
  absl::Status ParseClassBody(CharClass* k) {
    const size_t open = pos_ - 1;
    if (Peek(0, '^')) {
      k->negated = true;
      ++pos_;
    }
    bool first = true;
    for (;;) {
      if (pos_ >= p_.size()) return Error(open, "premature end of char-class");
      const char32_t c = p_[pos_];
      if (c == ']' && !first) {
        ++pos_;
        return absl::OkStatus();
      }
      first = false;
      if (c == '[') {
        if (Peek(1, ':')) return Error(pos_, "POSIX bracket is not supported");
        ++pos_;
        CharClass sub;
        absl::Status st = ParseClassBody(&sub);
        if (!st.ok()) return st;
        k->subs.push_back(std::move(sub));
        continue;
      }
      if (c == '&' && Peek(1, '&')) return Error(pos_, "class intersection '&&' is not supported");
      char32_t lo;
      absl::Status st = ParseClassChar(k, &lo);
      if (!st.ok()) return st;
      if (lo == kNoChar) continue;  // an item such as \s was added
      if (Peek(0, '-') && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        const size_t dash = pos_;
        ++pos_;
        char32_t hi;
        st = ParseClassChar(nullptr, &hi);
        if (!st.ok()) return st;
        if (hi == kNoChar) return Error(dash, "char-class value at end of range");
        if (hi < lo) return Error(dash, "empty range in char class");
        k->ranges.push_back({lo, hi});
      } else {
        k->ranges.push_back({lo, lo});
      }
    }
  }

  // One class member: a character (*out) or, when k != nullptr, an item
  // added to k (*out = kNoChar).
  absl::Status ParseClassChar(CharClass* k, char32_t* out) {
    const char32_t c = p_[pos_++];
    if (c != '\\') {
      *out = c;
      return absl::OkStatus();
    }
    const size_t at = pos_ - 1;
    Esc e;
    absl::Status st = ParseEscape(true, &e);
    if (!st.ok()) return st;
    if (e.kind == Esc::kItem) {
      if (k == nullptr) return Error(at, "char-class value at end of range");
      k->AddItem(std::move(e.item));
      *out = kNoChar;
    } else {
      *out = e.ch;
    }
    return absl::OkStatus();
  }

  // After '\'.
  absl::Status ParseEscape(bool in_class, Esc* e) {
    const size_t at = pos_ - 1;
    if (pos_ >= p_.size()) return Error(at, "end pattern at escape");
    const char32_t c = p_[pos_++];
    e->kind = Esc::kCharE;
    switch (c) {
      case 't': e->ch = '\t'; return absl::OkStatus();
      case 'n': e->ch = '\n'; return absl::OkStatus();
      case 'r': e->ch = '\r'; return absl::OkStatus();
      case 'f': e->ch = '\f'; return absl::OkStatus();
      case 'v': e->ch = '\v'; return absl::OkStatus();
      case 'a': e->ch = 7; return absl::OkStatus();
      case 'e': e->ch = 27; return absl::OkStatus();
      case 'x':
      case 'u': {
        char32_t v = 0;
        int digits = 0;
        if (Peek(0, '{')) {
          ++pos_;
          while (pos_ < p_.size() && IsHex(p_[pos_]) && digits < 8) {
            v = v * 16 + HexVal(p_[pos_++]);
            ++digits;
          }
          if (!Peek(0, '}') || digits == 0) return Error(at, "invalid code point value");
          ++pos_;
        } else {
          const int want = c == 'x' ? 2 : 4;
          while (digits < want && pos_ < p_.size() && IsHex(p_[pos_])) {
            v = v * 16 + HexVal(p_[pos_++]);
            ++digits;
          }
          if (digits == 0 || (c == 'u' && digits != 4)) {
            return Error(at, "invalid hexadecimal escape");
          }
        }
        if (v > 0x10FFFF) return Error(at, "code point out of range");
        e->ch = v;
        return absl::OkStatus();
      }
      case '0': {
        char32_t v = 0;
        for (int i = 0; i < 2 && pos_ < p_.size() && p_[pos_] >= '0' && p_[pos_] <= '7'; ++i) {
          v = v * 8 + (p_[pos_++] - '0');
        }
        e->ch = v;
        return absl::OkStatus();
      }
      case 'd': case 'D': case 's': case 'S': case 'w': case 'W': case 'h': case 'H': {
        e->kind = Esc::kItem;
        const char32_t lower = c | 0x20;
        if (lower == 'd') e->item.cats = 1u << uc::kNd;
        if (lower == 's') e->item.white = true;
        if (lower == 'w') e->item.word = true;
        if (lower == 'h') e->item.ranges = {{'0', '9'}, {'a', 'f'}, {'A', 'F'}};
        e->item.negated = c != lower;
        return absl::OkStatus();
      }
      case 'p':
      case 'P': {
        if (!Peek(0, '{')) {  // Ruby syntax: "\pL" is the literal "pL"
          e->ch = c;
          return absl::OkStatus();
        }
        ++pos_;
        bool neg = c == 'P';
        if (Peek(0, '^')) {
          neg = !neg;
          ++pos_;
        }
        size_t end = pos_;
        while (end < p_.size() && p_[end] != '}') ++end;
        if (end >= p_.size()) return Error(at, "invalid character property name");
        std::string name;
        for (size_t i = pos_; i < end; ++i) {
          if (p_[i] >= 0x80) return Error(at, "invalid character property name");
          name.push_back(static_cast<char>(p_[i]));
        }
        uint32_t mask;
        if (!uc::ParseCategoryName(name, &mask)) {
          if (name == "Space" || name == "White_Space" || name == "space") {
            e->item.white = true;
          } else {
            return Error(at, absl::StrCat("unsupported property \\p{", name,
                                          "} (general categories only)"));
          }
        } else {
          e->item.cats = mask;
        }
        pos_ = end + 1;
        e->kind = Esc::kItem;
        e->item.negated = neg;
        return absl::OkStatus();
      }
      case 'b':
        if (in_class) {
          e->ch = 8;
          return absl::OkStatus();
        }
        [[fallthrough]];
      case 'A': case 'z': case 'Z': case 'B':
        if (in_class) return Error(at, "anchor in a char class");
        e->kind = Esc::kAssertE;
        e->assert_kind = c == 'A' ? kBegin : c == 'z' ? kEndText : c == 'Z' ? kEndTextNl
                         : c == 'b' ? kWordB : kNotWordB;
        return absl::OkStatus();
      default:
        break;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '1' && c <= '9')) {
      return Error(at, absl::StrCat("unsupported escape \\", std::string(1, static_cast<char>(c))));
    }
    e->ch = c;
    return absl::OkStatus();
  }

  std::u32string p_;
  size_t pos_ = 0;
  Regex::Program* prog_;
};

// ---- Compiler: AST to a node graph, built back to front -------------------------

class Compiler {
 public:
  explicit Compiler(Regex::Program* prog) : prog_(prog) {}

  absl::Status Compile(const Ast& ast) {
    const int end = Emit(Node{});
    auto start = Comp(ast, end);
    if (!start.ok()) return start.status();
    prog_->start = *start;
    ComputeFirstSets();
    return absl::OkStatus();
  }

 private:
  int Emit(Node n) {
    prog_->nodes.push_back(std::move(n));
    return static_cast<int>(prog_->nodes.size()) - 1;
  }

  absl::StatusOr<int> Comp(const Ast& a, int next) {
    if (prog_->nodes.size() > kMaxNodes) {
      return absl::InvalidArgumentError("regex: pattern too large after expanding repeats");
    }
    switch (a.kind) {
      case Ast::kEmpty:
        return next;
      case Ast::kLit:
        return EmitLiteral(&a, &a + 1, next);
      case Ast::kCls: {
        Node n;
        n.op = kClass;
        n.cls = a.cls;
        n.next = next;
        return Emit(std::move(n));
      }
      case Ast::kConcat: {
        int cur = next;
        size_t i = a.kids.size();
        while (i > 0) {
          const Ast& kid = a.kids[i - 1];
          if (kid.kind == Ast::kLit && kid.icase) {
            size_t j = i - 1;  // case-insensitive literal runs fold together
            while (j > 0 && a.kids[j - 1].kind == Ast::kLit && a.kids[j - 1].icase) --j;
            cur = EmitLiteral(&a.kids[j], &a.kids[i - 1] + 1, cur);
            i = j;
            continue;
          }
          auto r = Comp(kid, cur);
          if (!r.ok()) return r;
          cur = *r;
          --i;
        }
        return cur;
      }
      case Ast::kAltern: {
        Node n;
        n.op = kAlt;
        n.next = next;
        for (const Ast& kid : a.kids) {
          auto r = Comp(kid, next);
          if (!r.ok()) return r;
          n.alts.push_back(*r);
        }
        return Emit(std::move(n));
      }
      case Ast::kRep:
        return CompRepeat(a, next);
      case Ast::kLookA: {
        Node succeed;
        succeed.op = kSucceed;
        auto body = Comp(a.kids[0], Emit(std::move(succeed)));
        if (!body.ok()) return body;
        Node n;
        n.op = kLook;
        n.negate = a.negate;
        n.body = *body;
        n.next = next;
        return Emit(std::move(n));
      }
      case Ast::kAssertA: {
        Node n;
        n.op = kAssert;
        n.assert_kind = a.assert_kind;
        n.next = next;
        return Emit(std::move(n));
      }
    }
    return absl::InternalError("regex: bad AST");
  }

  int EmitLiteral(const Ast* begin, const Ast* end, int next) {
    Node n;
    n.next = next;
    if (!begin->icase) {
      n.op = kChar;
      n.ch = begin->ch;
      return Emit(std::move(n));
    }
    n.op = kFoldStr;
    for (const Ast* a = begin; a != end; ++a) {
      char32_t f[3];
      const int k = uc::FullFold(a->ch, f);
      n.str.append(f, k);
    }
    return Emit(std::move(n));
  }

  absl::StatusOr<int> CompRepeat(const Ast& a, int next) {
    const Ast& kid = a.kids[0];
    if (kid.kind == Ast::kLit || kid.kind == Ast::kCls) {
      int cls = kid.cls;
      if (kid.kind == Ast::kLit) {
        CharClass k;
        const std::u32string variants =
            kid.icase ? uc::CaseVariants(kid.ch) : std::u32string(1, kid.ch);
        for (char32_t v : variants) k.ranges.push_back({v, v});
        k.Finalize();
        prog_->classes.push_back(std::move(k));
        cls = static_cast<int>(prog_->classes.size()) - 1;
      }
      Node n;
      n.op = kRepeat;
      n.cls = cls;
      n.min = a.min;
      n.max = a.max;
      n.rep = a.rep;
      n.next = next;
      return Emit(std::move(n));
    }
    if (a.rep == kPossessive) {
      return absl::InvalidArgumentError(
          "regex: possessive quantifier on a group is not supported");
    }
    int cur = next;
    if (a.max == kInf) {
      Node star;
      star.op = kStar;
      star.rep = a.rep;
      star.loop_id = prog_->num_loops++;
      star.next = next;
      const int s = Emit(std::move(star));
      Node back;
      back.op = kStarBack;
      back.star = s;
      auto body = Comp(kid, Emit(std::move(back)));
      if (!body.ok()) return body;
      prog_->nodes[s].body = *body;
      cur = s;
    } else {
      for (int k = 0; k < a.max - a.min; ++k) {  // (?:x(?:x(?:x)?)?)?
        auto body = Comp(kid, cur);
        if (!body.ok()) return body;
        Node alt;
        alt.op = kAlt;
        alt.next = next;
        alt.alts = a.rep == kLazy ? std::vector<int>{cur, *body} : std::vector<int>{*body, cur};
        cur = Emit(std::move(alt));
      }
    }
    for (int k = 0; k < a.min; ++k) {
      auto body = Comp(kid, cur);
      if (!body.ok()) return body;
      cur = *body;
    }
    return cur;
  }

  // Adds what node `ni` can consume first to *fs; returns true if it may
  // succeed without consuming (or is not analysed: lookahead, anchors).
  bool First(int ni, FirstSet* fs, int depth) const {
    const Node& n = prog_->nodes[ni];
    if (depth > 100) return true;
    switch (n.op) {
      case kChar:
        fs->AddChar(n.ch);
        return false;
      case kClass:
        fs->AddClass(prog_->classes[n.cls]);
        return false;
      case kFoldStr: {
        const char32_t f = n.str[0];
        for (char32_t c = 0; c < 128; ++c) {
          char32_t g[3];
          uc::FullFold(c, g);
          if (g[0] == f) fs->AddChar(c);
        }
        // Only letters (and their foldings) can fold to a letter.
        if (f >= 128 || ((f | 0x20) >= 'a' && (f | 0x20) <= 'z')) fs->all_nonascii = true;
        return false;
      }
      case kRepeat:
        fs->AddClass(prog_->classes[n.cls]);
        return n.min == 0 ? First(n.next, fs, depth + 1) : false;
      case kAlt: {
        bool empty = false;
        for (int alt : n.alts) empty |= First(alt, fs, depth + 1);
        return empty;
      }
      case kStar: {
        const bool body_empty = First(n.body, fs, depth + 1);
        return First(n.next, fs, depth + 1) || body_empty;
      }
      default:
        return true;
    }
  }

  int FirstSetOf(int ni) {
    FirstSet fs;
    if (First(ni, &fs, 0)) return -1;
    prog_->firsts.push_back(fs);
    return static_cast<int>(prog_->firsts.size()) - 1;
  }

  void ComputeFirstSets() {
    for (size_t i = 0; i < prog_->nodes.size(); ++i) {
      Node& n = prog_->nodes[i];
      if (n.op == kAlt) {
        std::vector<int> firsts;
        for (int alt : n.alts) firsts.push_back(FirstSetOf(alt));
        prog_->nodes[i].alt_first = std::move(firsts);
      } else if (n.op == kRepeat && n.rep != kPossessive) {
        const int f = FirstSetOf(n.next);
        prog_->nodes[i].cont_first = f;
      }
    }
    prog_->start_first = FirstSetOf(prog_->start);
  }

  Regex::Program* prog_;
};

// ---- Matcher -------------------------------------------------------------------

class Matcher {
 public:
  Matcher(const Regex::Program& p, std::u32string_view text)
      : p_(p), t_(text.data()), n_(text.size()), loop_pos_(p.num_loops, ~size_t{0}) {}

  bool Search(size_t start, size_t* begin, size_t* end) {
    const FirstSet* f = p_.start_first >= 0 ? &p_.firsts[p_.start_first] : nullptr;
    for (size_t pos = start; pos <= n_; ++pos) {
      if (f != nullptr && (pos == n_ || !f->Match(t_[pos]))) continue;
      if (Run(p_.start, pos)) {
        *begin = pos;
        *end = match_end_;
        return true;
      }
    }
    return false;
  }

 private:
  bool CheckAssert(AssertKind k, size_t pos) const {
    switch (k) {
      case kBol: return pos == 0 || t_[pos - 1] == '\n';
      case kEol: return pos == n_ || t_[pos] == '\n';
      case kBegin: return pos == 0;
      case kEndText: return pos == n_;
      case kEndTextNl: return pos == n_ || (pos + 1 == n_ && t_[pos] == '\n');
      case kWordB:
      case kNotWordB: {
        const bool before = pos > 0 && IsWordProps(uc::Props(t_[pos - 1]));
        const bool after = pos < n_ && IsWordProps(uc::Props(t_[pos]));
        return (before != after) == (k == kWordB);
      }
    }
    return false;
  }

  bool Run(int ni, size_t pos) {
    for (;;) {
      const Node& nd = p_.nodes[ni];
      switch (nd.op) {
        case kEnd:
          match_end_ = pos;
          return true;
        case kSucceed:
          return true;
        case kChar:
          if (pos >= n_ || t_[pos] != nd.ch) return false;
          ++pos;
          ni = nd.next;
          break;
        case kClass:
          if (pos >= n_ || !p_.classes[nd.cls].Match(t_[pos])) return false;
          ++pos;
          ni = nd.next;
          break;
        case kFoldStr: {
          size_t i = 0;
          const size_t len = nd.str.size();
          while (i < len) {
            if (pos >= n_) return false;
            char32_t f[3];
            const int k = uc::FullFold(t_[pos], f);
            if (i + k > len) return false;
            for (int j = 0; j < k; ++j) {
              if (nd.str[i + j] != f[j]) return false;
            }
            i += k;
            ++pos;
          }
          ni = nd.next;
          break;
        }
        case kRepeat: {
          const CharClass& k = p_.classes[nd.cls];
          const size_t room = n_ - pos;
          const size_t max = nd.max == kInf ? room : std::min(room, static_cast<size_t>(nd.max));
          const size_t min = static_cast<size_t>(nd.min);
          if (nd.rep == kLazy) {
            size_t j = 0;
            for (; j < min; ++j) {
              if (j >= max || !k.Match(t_[pos + j])) return false;
            }
            for (;; ++j) {
              if (Run(nd.next, pos + j)) return true;
              if (j >= max || !k.Match(t_[pos + j])) return false;
            }
          }
          size_t count = 0;
          while (count < max && k.Match(t_[pos + count])) ++count;
          if (count < min) return false;
          if (nd.rep == kPossessive) {
            pos += count;
            ni = nd.next;
            break;
          }
          const FirstSet* f = nd.cont_first >= 0 ? &p_.firsts[nd.cont_first] : nullptr;
          for (size_t j = count; j > min; --j) {
            const size_t q = pos + j;
            if (f != nullptr && (q >= n_ || !f->Match(t_[q]))) continue;
            if (Run(nd.next, q)) return true;
          }
          pos += min;
          if (f != nullptr && (pos >= n_ || !f->Match(t_[pos]))) return false;
          ni = nd.next;
          break;
        }
        case kAlt: {
          const size_t last = nd.alts.size() - 1;
          int chosen = -1;
          for (size_t i = 0; i <= last; ++i) {
            const int fi = nd.alt_first[i];
            if (fi >= 0 && (pos >= n_ || !p_.firsts[fi].Match(t_[pos]))) continue;
            if (i == last) {
              chosen = nd.alts[i];
              break;
            }
            if (Run(nd.alts[i], pos)) return true;
          }
          if (chosen < 0) return false;
          ni = chosen;
          break;
        }
        case kStar: {
          size_t& lp = loop_pos_[nd.loop_id];
          const size_t saved = lp;
          if (nd.rep == kLazy) {
            if (Run(nd.next, pos)) return true;
            lp = pos;
            if (Run(nd.body, pos)) return true;
            lp = saved;
            return false;
          }
          lp = pos;
          if (Run(nd.body, pos)) return true;
          lp = saved;
          ni = nd.next;
          break;
        }
        case kStarBack: {
          const Node& star = p_.nodes[nd.star];
          // An iteration that matched nothing ends the loop (Oniguruma's
          // empty check).
          ni = (pos == loop_pos_[star.loop_id]) ? star.next : nd.star;
          break;
        }
        case kLook:
          if (Run(nd.body, pos) == nd.negate) return false;
          ni = nd.next;
          break;
        case kAssert:
          if (!CheckAssert(nd.assert_kind, pos)) return false;
          ni = nd.next;
          break;
      }
    }
  }

  const Regex::Program& p_;
  const char32_t* t_;
  size_t n_;
  size_t match_end_ = 0;
  std::vector<size_t> loop_pos_;
};

}  // namespace

absl::StatusOr<Regex> Regex::Compile(absl::string_view pattern) {
  auto prog = std::make_shared<Program>();
  prog->pattern = std::string(pattern);
  std::u32string p;
  absl::Status st = uc::DecodeUtf8(pattern, &p, "regex pattern");
  if (!st.ok()) return st;
  Ast ast;
  st = Parser(std::move(p), prog.get()).Parse(&ast);
  if (!st.ok()) return st;
  st = Compiler(prog.get()).Compile(ast);
  if (!st.ok()) return st;
  return Regex(std::move(prog));
}

const std::string& Regex::pattern() const { return prog_->pattern; }

bool Regex::Search(std::u32string_view text, size_t start, size_t* begin,
                   size_t* end) const {
  if (start > text.size()) return false;
  return Matcher(*prog_, text).Search(start, begin, end);
}

void Regex::FindAll(std::u32string_view text,
                    std::vector<std::pair<size_t, size_t>>* matches) const {
  matches->clear();
  Matcher m(*prog_, text);
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match = 0;
  while (last_end <= text.size()) {
    size_t b, e;
    if (!m.Search(last_end, &b, &e)) break;
    if (b == e) {
      // onig find_iter: continue one code point on; drop an empty match
      // right where the previous match ended.
      last_end = e + 1;
      if (have_last && last_match == e) continue;
    } else {
      last_end = e;
    }
    have_last = true;
    last_match = e;
    matches->emplace_back(b, e);
  }
}

}  // namespace kvfold
