// Jinja parser: lexer pieces (jinja_lex.cc) -> internal::Body, with the
// operator precedence of jinja2/parser.py.
#include <algorithm>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/chat/jinja_internal.h"
#include "models/chat/jinja_lex.h"

namespace kvfold::jinja::internal {
namespace {

// ---------------------------------------------------------------------------
// Parser.

class Parser {
 public:
  Parser(std::vector<Piece> pieces, const std::string& name)
      : pieces_(std::move(pieces)), name_(name) {}

  absl::StatusOr<Body> ParseAll() {
    Body body;
    std::string end_tag;
    auto st = ParseBody(&body, {}, &end_tag);
    if (!st.ok()) return st;
    return body;
  }

 private:
  absl::Status ErrorAt(int line, int col, std::string_view msg) const {
    return absl::InvalidArgumentError(
        Cat(name_, ":", line, ":", col, ": ", msg));
  }
  absl::Status ErrorTok(const Token& t, std::string_view msg) const {
    return ErrorAt(t.line, t.col, msg);
  }

  // Statements until one of `ends` (a block tag name) or the end of input;
  // the found end tag name is stored in *found (tokens_ positioned after
  // the name).
  absl::Status ParseBody(Body* body, const std::vector<std::string>& ends,
                         std::string* found) {
    if (++depth_ > kMaxParseDepth) {
      return absl::InvalidArgumentError(
          Cat(name_, ": blocks nested deeper than ", kMaxParseDepth));
    }
    while (piece_ < pieces_.size()) {
      Piece& p = pieces_[piece_++];
      if (p.type == Piece::Type::kText) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kText;
        s->text = std::move(p.text);
        body->push_back(std::move(s));
        continue;
      }
      toks_ = &p.tokens;
      pos_ = 0;
      nodes_ = 0;
      if (p.type == Piece::Type::kOutput) {
        auto s = std::make_unique<Stmt>();
        s->kind = Stmt::Kind::kOutput;
        s->line = p.line;
        s->col = p.col;
        auto e = ParseTupleExpr(true);
        if (!e.ok()) return e.status();
        s->expr = std::move(*e);
        if (auto st = ExpectEnd("end of print statement"); !st.ok()) return st;
        body->push_back(std::move(s));
        continue;
      }
      const Token& t = Peek();
      if (t.type != Token::Type::kName) {
        return ErrorTok(t, "expected a tag name after '{%'");
      }
      for (const std::string& e : ends) {
        if (t.text == e) {
          ++pos_;
          *found = e;
          --depth_;
          return absl::OkStatus();
        }
      }
      auto s = ParseStatement(p);
      if (!s.ok()) return s.status();
      body->push_back(std::move(*s));
    }
    if (!ends.empty()) {
      return ErrorAt(open_line_, open_col_,
                     Cat("unexpected end of template: '", open_tag_,
                                  "' block is not closed (expected '",
                                  ends.back(), "')"));
    }
    --depth_;
    return absl::OkStatus();
  }

  // Parses a nested body closed by one of `ends`, remembering the opener
  // for error messages.
  absl::Status ParseNested(const Piece& opener, const std::string& tag,
                           Body* body, const std::vector<std::string>& ends,
                           std::string* found) {
    std::string saved_tag = open_tag_;
    int saved_line = open_line_, saved_col = open_col_;
    open_tag_ = tag;
    open_line_ = opener.line;
    open_col_ = opener.col;
    auto st = ParseBody(body, ends, found);
    open_tag_ = saved_tag;
    open_line_ = saved_line;
    open_col_ = saved_col;
    return st;
  }

  absl::StatusOr<StmtPtr> ParseStatement(const Piece& p) {
    const Token& t = Next();
    auto s = std::make_unique<Stmt>();
    s->line = t.line;
    s->col = t.col;
    const std::string& tag = t.text;
    if (tag == "if") {
      s->kind = Stmt::Kind::kIf;
      auto cond = ParseExpr();
      if (!cond.ok()) return cond.status();
      if (auto st = ExpectEnd("end of if tag"); !st.ok()) return st;
      ExprPtr c = std::move(*cond);
      while (true) {
        Body body;
        std::string found;
        if (auto st = ParseNested(p, "if", &body, {"elif", "else", "endif"},
                                  &found);
            !st.ok()) {
          return st;
        }
        s->branches.emplace_back(std::move(c), std::move(body));
        if (found == "endif") break;
        if (found == "else") {
          if (auto st = ExpectEnd("end of else tag"); !st.ok()) return st;
          Body else_body;
          if (auto st = ParseNested(p, "if", &else_body, {"endif"}, &found);
              !st.ok()) {
            return st;
          }
          s->branches.emplace_back(nullptr, std::move(else_body));
          break;
        }
        auto next = ParseExpr();
        if (!next.ok()) return next.status();
        c = std::move(*next);
        if (auto st = ExpectEnd("end of elif tag"); !st.ok()) return st;
      }
    } else if (tag == "for") {
      s->kind = Stmt::Kind::kFor;
      if (auto st = ParseTargets(&s->targets); !st.ok()) return st;
      if (!AcceptName("in")) return ErrorTok(Peek(), "expected 'in' in for");
      auto iter = ParseTupleExpr(false);
      if (!iter.ok()) return iter.status();
      s->expr = std::move(*iter);
      if (AcceptName("if")) {
        auto f = ParseExpr();
        if (!f.ok()) return f.status();
        s->filter = std::move(*f);
      }
      if (Peek().type == Token::Type::kName && Peek().text == "recursive") {
        return ErrorTok(Peek(), "unsupported: recursive for loops");
      }
      if (auto st = ExpectEnd("end of for tag"); !st.ok()) return st;
      std::string found;
      if (auto st = ParseNested(p, "for", &s->body, {"else", "endfor"}, &found);
          !st.ok()) {
        return st;
      }
      if (found == "else") {
        if (auto st = ExpectEnd("end of else tag"); !st.ok()) return st;
        if (auto st = ParseNested(p, "for", &s->else_body, {"endfor"}, &found);
            !st.ok()) {
          return st;
        }
      }
    } else if (tag == "set") {
      if (Peek().type == Token::Type::kName && PeekAt(1).text == "." &&
          PeekAt(2).type == Token::Type::kName) {
        s->targets.push_back(Next().text);
        Next();
        s->attr = Next().text;
      } else if (auto st = ParseTargets(&s->targets); !st.ok()) {
        return st;
      }
      if (Peek().type == Token::Type::kEnd && s->targets.size() == 1 &&
          s->attr.empty()) {
        s->kind = Stmt::Kind::kSetBlock;
        ++pos_;
        std::string found;
        if (auto st = ParseNested(p, "set", &s->body, {"endset"}, &found);
            !st.ok()) {
          return st;
        }
      } else {
        s->kind = Stmt::Kind::kSet;
        if (!AcceptOp("=")) return ErrorTok(Peek(), "expected '=' in set");
        auto v = ParseTupleExpr(true);
        if (!v.ok()) return v.status();
        s->expr = std::move(*v);
      }
    } else if (tag == "macro") {
      s->kind = Stmt::Kind::kMacro;
      if (Peek().type != Token::Type::kName) {
        return ErrorTok(Peek(), "expected a macro name");
      }
      s->name = Next().text;
      if (!AcceptOp("(")) return ErrorTok(Peek(), "expected '(' after macro name");
      while (!AcceptOp(")")) {
        if (!s->params.empty() && !AcceptOp(",")) {
          return ErrorTok(Peek(), "expected ',' in macro parameters");
        }
        if (Peek().type != Token::Type::kName) {
          return ErrorTok(Peek(), "expected a parameter name");
        }
        s->params.push_back(Next().text);
        ExprPtr def;
        if (AcceptOp("=")) {
          auto d = ParseExpr();
          if (!d.ok()) return d.status();
          def = std::move(*d);
        }
        s->defaults.push_back(std::move(def));
      }
      std::string found;
      if (auto st = ExpectEnd("end of macro tag"); !st.ok()) return st;
      if (auto st = ParseNested(p, "macro", &s->body, {"endmacro"}, &found);
          !st.ok()) {
        return st;
      }
    } else if (tag == "break" || tag == "continue") {
      s->kind = tag == "break" ? Stmt::Kind::kBreak : Stmt::Kind::kContinue;
    } else if (tag == "generation") {
      s->kind = Stmt::Kind::kScope;
      if (auto st = ExpectEnd("end of generation tag"); !st.ok()) return st;
      std::string found;
      if (auto st = ParseNested(p, "generation", &s->body, {"endgeneration"},
                                &found);
          !st.ok()) {
        return st;
      }
    } else {
      return ErrorTok(t, Cat("unknown or unsupported tag '", tag,
                                      "'"));
    }
    if (auto st = ExpectEnd("end of tag"); !st.ok()) return st;
    return s;
  }

  absl::Status ParseTargets(std::vector<std::string>* targets) {
    bool paren = AcceptOp("(");
    do {
      if (Peek().type != Token::Type::kName) {
        return ErrorTok(Peek(), "expected a variable name");
      }
      targets->push_back(Next().text);
    } while (AcceptOp(","));
    if (paren && !AcceptOp(")")) return ErrorTok(Peek(), "expected ')'");
    return absl::OkStatus();
  }

  // --- tokens ---
  const Token& Peek() const { return (*toks_)[pos_]; }
  const Token& PeekAt(size_t k) const {
    size_t i = std::min(pos_ + k, toks_->size() - 1);
    return (*toks_)[i];
  }
  const Token& Next() {
    const Token& t = (*toks_)[pos_];
    if (t.type != Token::Type::kEnd) ++pos_;
    return t;
  }
  bool AcceptOp(std::string_view op) {
    if (Peek().type == Token::Type::kOp && Peek().text == op) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool AcceptName(std::string_view n) {
    if (Peek().type == Token::Type::kName && Peek().text == n) {
      ++pos_;
      return true;
    }
    return false;
  }
  absl::Status ExpectEnd(std::string_view what) {
    if (Peek().type == Token::Type::kEnd) return absl::OkStatus();
    return ErrorTok(Peek(), Cat("unexpected '", Describe(Peek()),
                                         "', expected ", what));
  }
  static std::string Describe(const Token& t) {
    switch (t.type) {
      case Token::Type::kEnd: return "end of tag";
      case Token::Type::kString: return "string literal";
      case Token::Type::kInt: return std::to_string(t.int_value);
      case Token::Type::kFloat: return "float literal";
      default: return t.text;
    }
  }

  ExprPtr Make(Expr::Op op, const Token& at) {
    ++nodes_;
    auto e = std::make_unique<Expr>();
    e->op = op;
    e->line = at.line;
    e->col = at.col;
    return e;
  }

  // Long operator chains build deep left-leaning trees; cap the nodes per
  // tag so that evaluating or freeing them cannot exhaust the stack.
  static constexpr size_t kMaxNodesPerTag = 5000;
  absl::Status Budget() const {
    if (nodes_ > kMaxNodesPerTag) {
      return ErrorTok(Peek(), Cat("expression has more than ",
                                           kMaxNodesPerTag, " nodes"));
    }
    return absl::OkStatus();
  }

  // --- expressions (precedence as in jinja2/parser.py) ---
  struct DepthGuard {
    explicit DepthGuard(int* d) : d_(d) { ++*d_; }
    ~DepthGuard() { --*d_; }
    int* d_;
  };

  absl::StatusOr<ExprPtr> ParseTupleExpr(bool with_condexpr) {
    const Token& start = Peek();
    auto first = with_condexpr ? ParseExpr() : ParseOr();
    if (!first.ok()) return first;
    if (!(Peek().type == Token::Type::kOp && Peek().text == ",")) return first;
    auto tuple = Make(Expr::Op::kTuple, start);
    tuple->args.push_back(std::move(*first));
    while (AcceptOp(",")) {
      if (Peek().type == Token::Type::kEnd) break;
      auto e = with_condexpr ? ParseExpr() : ParseOr();
      if (!e.ok()) return e;
      tuple->args.push_back(std::move(*e));
    }
    return tuple;
  }

  absl::StatusOr<ExprPtr> ParseExpr() {
    DepthGuard g(&expr_depth_);
    if (expr_depth_ > kMaxParseDepth) {
      return ErrorTok(Peek(), "expression nested too deeply");
    }
    const Token& start = Peek();
    auto e = ParseOr();
    if (!e.ok()) return e;
    ExprPtr node = std::move(*e);
    while (AcceptName("if")) {
      auto cond = ParseOr();
      if (!cond.ok()) return cond;
      ExprPtr other;
      if (AcceptName("else")) {
        auto o = ParseExpr();
        if (!o.ok()) return o;
        other = std::move(*o);
      }
      auto c = Make(Expr::Op::kCond, start);
      c->args.push_back(std::move(node));
      c->args.push_back(std::move(*cond));
      c->args.push_back(std::move(other));
      node = std::move(c);
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    auto l = ParseAnd();
    if (!l.ok()) return l;
    ExprPtr node = std::move(*l);
    while (Peek().type == Token::Type::kName && Peek().text == "or") {
      const Token& t = Next();
      auto r = ParseAnd();
      if (!r.ok()) return r;
      auto n = Make(Expr::Op::kOr, t);
      n->args.push_back(std::move(node));
      n->args.push_back(std::move(*r));
      node = std::move(n);
      if (auto st = Budget(); !st.ok()) return st;
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    auto l = ParseNot();
    if (!l.ok()) return l;
    ExprPtr node = std::move(*l);
    while (Peek().type == Token::Type::kName && Peek().text == "and") {
      const Token& t = Next();
      auto r = ParseNot();
      if (!r.ok()) return r;
      auto n = Make(Expr::Op::kAnd, t);
      n->args.push_back(std::move(node));
      n->args.push_back(std::move(*r));
      node = std::move(n);
      if (auto st = Budget(); !st.ok()) return st;
    }
    return node;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (Peek().type == Token::Type::kName && Peek().text == "not") {
      DepthGuard g(&expr_depth_);
      if (expr_depth_ > kMaxParseDepth) {
        return ErrorTok(Peek(), "expression nested too deeply");
      }
      const Token& t = Next();
      auto e = ParseNot();
      if (!e.ok()) return e;
      auto n = Make(Expr::Op::kNot, t);
      n->args.push_back(std::move(*e));
      return n;
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    auto l = ParseMath1();
    if (!l.ok()) return l;
    ExprPtr node = std::move(*l);
    while (true) {
      const Token& t = Peek();
      std::string op;
      Expr::Op kind = Expr::Op::kBinary;
      if (t.type == Token::Type::kOp &&
          (t.text == "==" || t.text == "!=" || t.text == "<" ||
           t.text == "<=" || t.text == ">" || t.text == ">=")) {
        op = t.text;
        ++pos_;
      } else if (t.type == Token::Type::kName && t.text == "in") {
        op = "in";
        ++pos_;
      } else if (t.type == Token::Type::kName && t.text == "not" &&
                 PeekAt(1).type == Token::Type::kName &&
                 PeekAt(1).text == "in") {
        pos_ += 2;
        kind = Expr::Op::kNotIn;
      } else {
        return node;
      }
      auto r = ParseMath1();
      if (!r.ok()) return r;
      auto n = Make(kind, t);
      n->name = op;
      n->args.push_back(std::move(node));
      n->args.push_back(std::move(*r));
      node = std::move(n);
      if (auto st = Budget(); !st.ok()) return st;
    }
  }

  using SubParser = absl::StatusOr<ExprPtr> (Parser::*)();
  absl::StatusOr<ExprPtr> ParseBinaryLevel(
      SubParser sub, std::initializer_list<std::string_view> ops) {
    auto l = (this->*sub)();
    if (!l.ok()) return l;
    ExprPtr node = std::move(*l);
    while (true) {
      const Token& t = Peek();
      bool match = false;
      if (t.type == Token::Type::kOp) {
        for (std::string_view o : ops) match = match || t.text == o;
      }
      if (!match) return node;
      ++pos_;
      auto r = (this->*sub)();
      if (!r.ok()) return r;
      auto n = Make(Expr::Op::kBinary, t);
      n->name = t.text;
      n->args.push_back(std::move(node));
      n->args.push_back(std::move(*r));
      node = std::move(n);
      if (auto st = Budget(); !st.ok()) return st;
    }
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    return ParseBinaryLevel(&Parser::ParseConcat, {"+", "-"});
  }
  absl::StatusOr<ExprPtr> ParseConcat() {
    return ParseBinaryLevel(&Parser::ParseMath2, {"~"});
  }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel(&Parser::ParsePow, {"*", "/", "//", "%"});
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    return ParseBinaryLevel(&Parser::ParseUnaryWithFilter, {"**"});
  }
  absl::StatusOr<ExprPtr> ParseUnaryWithFilter() { return ParseUnary(true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard g(&expr_depth_);
    if (expr_depth_ > kMaxParseDepth) {
      return ErrorTok(Peek(), "expression nested too deeply");
    }
    const Token& t = Peek();
    ExprPtr node;
    if (t.type == Token::Type::kOp && (t.text == "-" || t.text == "+")) {
      ++pos_;
      auto e = ParseUnary(false);
      if (!e.ok()) return e;
      node = Make(t.text == "-" ? Expr::Op::kNeg : Expr::Op::kPos, t);
      node->args.push_back(std::move(*e));
    } else {
      auto e = ParsePrimary();
      if (!e.ok()) return e;
      auto p = ParsePostfix(std::move(*e));
      if (!p.ok()) return p;
      node = std::move(*p);
    }
    if (with_filter) return ParseFilterExpr(std::move(node));
    return node;
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    const Token& t = Next();
    switch (t.type) {
      case Token::Type::kName: {
        auto e = Make(Expr::Op::kLiteral, t);
        if (t.text == "true" || t.text == "True") {
          e->literal = Value(true);
        } else if (t.text == "false" || t.text == "False") {
          e->literal = Value(false);
        } else if (t.text == "none" || t.text == "None") {
          e->literal = Value::None();
        } else {
          e->op = Expr::Op::kName;
          e->name = t.text;
        }
        return e;
      }
      case Token::Type::kString: {
        auto e = Make(Expr::Op::kLiteral, t);
        std::string s = t.text;
        while (Peek().type == Token::Type::kString) s += Next().text;
        e->literal = Value(std::move(s));
        return e;
      }
      case Token::Type::kInt: {
        auto e = Make(Expr::Op::kLiteral, t);
        e->literal = Value(t.int_value);
        return e;
      }
      case Token::Type::kFloat: {
        auto e = Make(Expr::Op::kLiteral, t);
        e->literal = Value(t.float_value);
        return e;
      }
      case Token::Type::kOp:
        if (t.text == "(") {
          if (AcceptOp(")")) return Make(Expr::Op::kTuple, t);
          auto e = ParseTupleExpr(true);
          if (!e.ok()) return e;
          bool explicit_tuple = Peek().type == Token::Type::kOp &&
                                Peek().text == ")" &&
                                (*toks_)[pos_ - 1].text == ",";
          if (!AcceptOp(")")) return ErrorTok(Peek(), "expected ')'");
          if (explicit_tuple && (*e)->op != Expr::Op::kTuple) {
            auto tup = Make(Expr::Op::kTuple, t);
            tup->args.push_back(std::move(*e));
            return tup;
          }
          return e;
        }
        if (t.text == "[") {
          auto e = Make(Expr::Op::kList, t);
          while (!AcceptOp("]")) {
            if (!e->args.empty() && !AcceptOp(",")) {
              return ErrorTok(Peek(), "expected ',' or ']' in list");
            }
            if (AcceptOp("]")) break;
            auto item = ParseExpr();
            if (!item.ok()) return item;
            e->args.push_back(std::move(*item));
          }
          return e;
        }
        if (t.text == "{") {
          auto e = Make(Expr::Op::kDict, t);
          while (!AcceptOp("}")) {
            if (!e->args.empty() && !AcceptOp(",")) {
              return ErrorTok(Peek(), "expected ',' or '}' in dict");
            }
            if (AcceptOp("}")) break;
            auto k = ParseExpr();
            if (!k.ok()) return k;
            if (!AcceptOp(":")) return ErrorTok(Peek(), "expected ':' in dict");
            auto v = ParseExpr();
            if (!v.ok()) return v;
            e->args.push_back(std::move(*k));
            e->args.push_back(std::move(*v));
          }
          return e;
        }
        [[fallthrough]];
      default:
        return ErrorTok(t, Cat("unexpected '", Describe(t), "'"));
    }
  }

  absl::Status ParseCallArgs(Expr* call) {
    // '(' already consumed.
    while (!AcceptOp(")")) {
      if (!(call->args.size() <= 1 && call->kwargs.empty()) &&
          !AcceptOp(",")) {
        return ErrorTok(Peek(), "expected ',' or ')' in call");
      }
      if (AcceptOp(")")) break;
      if (Peek().type == Token::Type::kName && PeekAt(1).type == Token::Type::kOp &&
          PeekAt(1).text == "=") {
        std::string key = Next().text;
        Next();
        auto v = ParseExpr();
        if (!v.ok()) return v.status();
        call->kwargs.emplace_back(std::move(key), std::move(*v));
      } else {
        if (!call->kwargs.empty()) {
          return ErrorTok(Peek(), "positional argument after keyword argument");
        }
        auto v = ParseExpr();
        if (!v.ok()) return v.status();
        call->args.push_back(std::move(*v));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr node) {
    while (true) {
      const Token& t = Peek();
      if (t.type != Token::Type::kOp) return node;
      if (t.text == ".") {
        ++pos_;
        const Token& a = Next();
        if (a.type == Token::Type::kName) {
          auto n = Make(Expr::Op::kAttr, a);
          n->name = a.text;
          n->args.push_back(std::move(node));
          node = std::move(n);
        if (auto st = Budget(); !st.ok()) return st;
        } else if (a.type == Token::Type::kInt) {
          auto n = Make(Expr::Op::kItem, a);
          n->args.push_back(std::move(node));
          auto idx = Make(Expr::Op::kLiteral, a);
          idx->literal = Value(a.int_value);
          n->args.push_back(std::move(idx));
          node = std::move(n);
        if (auto st = Budget(); !st.ok()) return st;
        } else {
          return ErrorTok(a, "expected an attribute name after '.'");
        }
      } else if (t.text == "[") {
        ++pos_;
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!(Peek().type == Token::Type::kOp &&
                (Peek().text == ":" || Peek().text == "]"))) {
            auto e = ParseExpr();
            if (!e.ok()) return e;
            parts[k] = std::move(*e);
          }
          if (k < 2 && AcceptOp(":")) {
            slice = true;
            continue;
          }
          break;
        }
        if (!AcceptOp("]")) return ErrorTok(Peek(), "expected ']'");
        if (!slice && !parts[0]) return ErrorTok(t, "empty subscript");
        auto n = Make(slice ? Expr::Op::kSlice : Expr::Op::kItem, t);
        n->args.push_back(std::move(node));
        n->args.push_back(std::move(parts[0]));
        if (slice) {
          n->args.push_back(std::move(parts[1]));
          n->args.push_back(std::move(parts[2]));
        }
        node = std::move(n);
        if (auto st = Budget(); !st.ok()) return st;
      } else if (t.text == "(") {
        ++pos_;
        auto n = Make(Expr::Op::kCall, t);
        n->args.push_back(std::move(node));
        if (auto st = ParseCallArgs(n.get()); !st.ok()) return st;
        node = std::move(n);
        if (auto st = Budget(); !st.ok()) return st;
      } else {
        return node;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterExpr(ExprPtr node) {
    while (true) {
      const Token& t = Peek();
      if (t.type == Token::Type::kOp && t.text == "|") {
        ++pos_;
        const Token& f = Next();
        if (f.type != Token::Type::kName) {
          return ErrorTok(f, "expected a filter name after '|'");
        }
        if (!IsKnownFilter(f.text)) {
          return ErrorTok(f, Cat("no filter named '", f.text, "'"));
        }
        auto n = Make(Expr::Op::kFilter, f);
        n->name = f.text;
        n->args.push_back(std::move(node));
        if (AcceptOp("(")) {
          if (auto st = ParseCallArgs(n.get()); !st.ok()) return st;
        }
        node = std::move(n);
        if (auto st = Budget(); !st.ok()) return st;
      } else if (t.type == Token::Type::kName && t.text == "is") {
        ++pos_;
        bool negated = AcceptName("not");
        const Token& f = Next();
        if (f.type != Token::Type::kName) {
          return ErrorTok(f, "expected a test name after 'is'");
        }
        if (!IsKnownTest(f.text)) {
          return ErrorTok(f, Cat("no test named '", f.text, "'"));
        }
        auto n = Make(Expr::Op::kTest, f);
        n->name = f.text;
        n->negated = negated;
        n->args.push_back(std::move(node));
        if (AcceptOp("(")) {
          if (auto st = ParseCallArgs(n.get()); !st.ok()) return st;
        } else {
          // One argument without parentheses: `x is divisibleby 3`.
          const Token& a = Peek();
          bool starts_arg =
              a.type == Token::Type::kString || a.type == Token::Type::kInt ||
              a.type == Token::Type::kFloat ||
              (a.type == Token::Type::kName && a.text != "else" &&
               a.text != "and" && a.text != "or" && a.text != "if" &&
               a.text != "in" && a.text != "not" && a.text != "is") ||
              (a.type == Token::Type::kOp && (a.text == "[" || a.text == "{"));
          if (starts_arg) {
            auto arg = ParsePrimary();
            if (!arg.ok()) return arg;
            auto post = ParsePostfix(std::move(*arg));
            if (!post.ok()) return post;
            n->args.push_back(std::move(*post));
          }
        }
        node = std::move(n);
        if (auto st = Budget(); !st.ok()) return st;
      } else {
        return node;
      }
    }
  }

  std::vector<Piece> pieces_;
  const std::string& name_;
  size_t piece_ = 0;
  const std::vector<Token>* toks_ = nullptr;
  size_t pos_ = 0;
  int depth_ = 0;
  int expr_depth_ = 0;
  size_t nodes_ = 0;  // expression nodes in the current tag
  std::string open_tag_;
  int open_line_ = 0, open_col_ = 0;
};

}  // namespace

absl::StatusOr<Body> ParseTemplate(std::string_view source,
                                   const std::string& name) {
  auto pieces = Lex(source, name);
  if (!pieces.ok()) return pieces.status();
  Parser parser(std::move(*pieces), name);
  return parser.ParseAll();
}

}  // namespace kvfold::jinja::internal
