#include "models/tokenizer/regex.h"

#include <algorithm>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "models/tokenizer/regex_internal.h"
#include "models/tokenizer/unicode.h"

namespace kvfold {
namespace regex_internal {
namespace {

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
}  // namespace regex_internal

using regex_internal::Ast;
using regex_internal::Compiler;
using regex_internal::Matcher;
namespace uc = ::kvfold::unicode;

absl::StatusOr<Regex> Regex::Compile(absl::string_view pattern) {
  auto prog = std::make_shared<Program>();
  prog->pattern = std::string(pattern);
  std::u32string p;
  absl::Status st = uc::DecodeUtf8(pattern, &p, "regex pattern");
  if (!st.ok()) return st;
  Ast ast;
  st = regex_internal::Parse(std::move(p), prog.get(), &ast);
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