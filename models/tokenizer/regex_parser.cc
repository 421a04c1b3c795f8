// Parser for the Oniguruma (Ruby syntax) subset of regex.h: pattern -> AST.
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/tokenizer/regex_internal.h"

namespace kvfold {
namespace regex_internal {
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
        char32_t hi = kNoChar;
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


}  // namespace

absl::Status Parse(std::u32string pattern, Regex::Program* prog, Ast* out) {
  return Parser(std::move(pattern), prog).Parse(out);
}

}  // namespace regex_internal
}  // namespace kvfold
