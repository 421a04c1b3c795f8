// The Jinja interpreter: walks the AST from jinja_parse.cc.
#include <cmath>
#include <ctime>
#include <string>
#include <utility>
#include <vector>

#include "models/chat/jinja_internal.h"

namespace kvfold::jinja {
namespace internal {
namespace {

constexpr int kMaxEvalDepth = 1000;

class Renderer {
 public:
  Renderer(const std::string& name, const RenderOptions& opts)
      : name_(name), opts_(opts) {}

  absl::Status Run(const Body& body, const Dict& root, std::string* out) {
    frames_.push_back(Dict{
        {"raise_exception", Value::Function("raise_exception")},
        {"strftime_now", Value::Function("strftime_now")},
        {"namespace", Value::Function("namespace")},
        {"range", Value::Function("range")},
        {"dict", Value::Function("dict")},
    });
    frames_.push_back(root);
    out_ = out;
    auto flow = ExecBody(body);
    if (!flow.ok()) return flow.status();
    return absl::OkStatus();
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };

  absl::Status Err(int line, int col, std::string_view msg) const {
    return absl::InvalidArgumentError(
        Cat(name_, ":", line, ":", col, ": ", msg));
  }
  absl::Status Err(const Expr& e, std::string_view msg) const {
    return Err(e.line, e.col, msg);
  }
  // Adds the position to an error from a builtin.
  absl::Status At(const Expr& e, const absl::Status& st) const {
    return absl::Status(st.code(),
                        Cat(name_, ":", e.line, ":", e.col, ": ",
                                     st.message()));
  }

  absl::Status Write(std::string_view s) {
    if (out_->size() + s.size() > opts_.max_output_bytes) {
      return absl::ResourceExhaustedError(Cat(
          name_, ": output exceeds ", opts_.max_output_bytes, " bytes"));
    }
    out_->append(s);
    return absl::OkStatus();
  }

  Value Lookup(const std::string& name) const {
    for (auto f = frames_.rbegin(); f != frames_.rend(); ++f) {
      for (const auto& [k, v] : *f) {
        if (k == name) return v;
      }
    }
    return Value::Undefined(Cat("'", name, "' is undefined"));
  }

  void Assign(const std::string& name, Value v) {
    Dict& f = frames_.back();
    for (auto& [k, old] : f) {
      if (k == name) {
        old = std::move(v);
        return;
      }
    }
    f.emplace_back(name, std::move(v));
  }

  absl::Status CountIteration(int line, int col) {
    if (++iterations_ > opts_.max_loop_iterations) {
      return Err(line, col, Cat("more than ", opts_.max_loop_iterations,
                                         " loop iterations"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Flow> ExecBody(const Body& body) {
    for (const StmtPtr& s : body) {
      auto flow = Exec(*s);
      if (!flow.ok() || *flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

  absl::Status Unpack(const Stmt& s, const std::vector<std::string>& targets,
                      const Value& v) {
    if (targets.size() == 1) {
      Assign(targets[0], v);
      return absl::OkStatus();
    }
    if (!v.is_list() || v.as_list().size() != targets.size()) {
      return Err(s.line, s.col,
                 Cat("cannot unpack ", v.TypeName(), " into ",
                              targets.size(), " variables"));
    }
    for (size_t i = 0; i < targets.size(); ++i) Assign(targets[i], v.as_list()[i]);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Capture(const Body& body) {
    std::string buf;
    std::string* saved = out_;
    out_ = &buf;
    auto flow = ExecBody(body);
    out_ = saved;
    if (!flow.ok()) return flow.status();
    return buf;
  }

  absl::StatusOr<Flow> Exec(const Stmt& s) {
    switch (s.kind) {
      case Stmt::Kind::kText:
        if (auto st = Write(s.text); !st.ok()) return st;
        return Flow::kNormal;
      case Stmt::Kind::kOutput: {
        auto v = Eval(*s.expr);
        if (!v.ok()) return v.status();
        if (auto st = Write(v->Str()); !st.ok()) return st;
        return Flow::kNormal;
      }
      case Stmt::Kind::kIf:
        for (const auto& [cond, body] : s.branches) {
          if (cond != nullptr) {
            auto c = Eval(*cond);
            if (!c.ok()) return c.status();
            if (!c->Truthy()) continue;
          }
          return ExecBody(body);
        }
        return Flow::kNormal;
      case Stmt::Kind::kFor:
        return ExecFor(s);
      case Stmt::Kind::kSet: {
        auto v = Eval(*s.expr);
        if (!v.ok()) return v.status();
        if (!s.attr.empty()) {
          Value ns = Lookup(s.targets[0]);
          if (!ns.is_namespace()) {
            return Err(s.line, s.col,
                       Cat("cannot assign attribute on non-namespace "
                                    "object '", s.targets[0], "'"));
          }
          ns.SetAttribute(s.attr, std::move(*v));
          return Flow::kNormal;
        }
        if (auto st = Unpack(s, s.targets, *v); !st.ok()) return st;
        return Flow::kNormal;
      }
      case Stmt::Kind::kSetBlock: {
        auto text = Capture(s.body);
        if (!text.ok()) return text.status();
        Assign(s.targets[0], Value(std::move(*text)));
        return Flow::kNormal;
      }
      case Stmt::Kind::kMacro:
        Assign(s.name, Value::Macro(&s));
        return Flow::kNormal;
      case Stmt::Kind::kBreak:
        if (loop_depth_ == 0) return Err(s.line, s.col, "'break' outside a loop");
        return Flow::kBreak;
      case Stmt::Kind::kContinue:
        if (loop_depth_ == 0) return Err(s.line, s.col, "'continue' outside a loop");
        return Flow::kContinue;
      case Stmt::Kind::kScope:
        return ExecBody(s.body);
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecFor(const Stmt& s) {
    auto iter = Eval(*s.expr);
    if (!iter.ok()) return iter.status();
    auto items = Iterate(*iter);
    if (!items.ok()) return At(*s.expr, items.status());
    if (s.filter != nullptr) {
      List kept;
      for (const Value& item : *items) {
        if (auto st = CountIteration(s.line, s.col); !st.ok()) return st;
        frames_.emplace_back();
        absl::Status st = Unpack(s, s.targets, item);
        absl::StatusOr<Value> c = st.ok() ? Eval(*s.filter) : st;
        frames_.pop_back();
        if (!c.ok()) return c.status();
        if (c->Truthy()) kept.push_back(item);
      }
      *items = std::move(kept);
    }
    const List& list = *items;
    const int64_t n = int64_t(list.size());
    ++loop_depth_;
    for (int64_t i = 0; i < n; ++i) {
      if (auto st = CountIteration(s.line, s.col); !st.ok()) return st;
      Dict loop = {
          {"index", Value(i + 1)},
          {"index0", Value(i)},
          {"revindex", Value(n - i)},
          {"revindex0", Value(n - i - 1)},
          {"first", Value(i == 0)},
          {"last", Value(i == n - 1)},
          {"length", Value(n)},
          {"depth", Value(1)},
          {"depth0", Value(0)},
          {"previtem", i > 0 ? list[i - 1] : Value::Undefined("there is no previous item")},
          {"nextitem", i + 1 < n ? list[i + 1] : Value::Undefined("there is no next item")},
      };
      frames_.emplace_back();
      Assign("loop", Value(std::move(loop)));
      absl::Status st = Unpack(s, s.targets, list[i]);
      absl::StatusOr<Flow> flow = st.ok() ? ExecBody(s.body) : st;
      frames_.pop_back();
      if (!flow.ok()) {
        --loop_depth_;
        return flow.status();
      }
      if (*flow == Flow::kBreak) break;
    }
    --loop_depth_;
    if (n == 0 && !s.else_body.empty()) {
      frames_.emplace_back();
      auto flow = ExecBody(s.else_body);
      frames_.pop_back();
      return flow;
    }
    return Flow::kNormal;
  }

  // --- expressions ---

  absl::StatusOr<Value> Eval(const Expr& e) {
    if (++eval_depth_ > kMaxEvalDepth) {
      --eval_depth_;
      return Err(e, "expression nested too deeply");
    }
    auto v = EvalInner(e);
    --eval_depth_;
    return v;
  }

  absl::StatusOr<CallArgs> EvalArgs(const Expr& e, size_t first) {
    CallArgs a;
    for (size_t i = first; i < e.args.size(); ++i) {
      auto v = Eval(*e.args[i]);
      if (!v.ok()) return v.status();
      a.pos.push_back(std::move(*v));
    }
    for (const auto& [k, x] : e.kwargs) {
      auto v = Eval(*x);
      if (!v.ok()) return v.status();
      a.kw.emplace_back(k, std::move(*v));
    }
    return a;
  }

  static Value GetAttr(const Value& obj, const std::string& name) {
    if (obj.is_dict() || obj.is_namespace()) {
      const Value* f = obj.Find(name);
      if (f != nullptr) return *f;
    }
    return Value::Undefined(Cat("'", obj.is_none() ? "None" : obj.TypeName() + " object",
                                         "' has no attribute '", name, "'"));
  }

  absl::StatusOr<Value> GetItem(const Expr& e, const Value& obj, const Value& key) {
    if (obj.is_undefined()) return Err(e, obj.undefined_hint());
    if (obj.is_dict() || obj.is_namespace()) {
      if (key.is_string()) return GetAttr(obj, key.as_string());
      return Value::Undefined(Cat("'dict object' has no attribute ", key.Repr()));
    }
    if ((obj.is_list() || obj.is_string()) && (key.is_int() || key.is_bool())) {
      int64_t i = key.as_int();
      if (obj.is_list()) {
        const List& l = obj.as_list();
        if (i < 0) i += int64_t(l.size());
        if (i < 0 || i >= int64_t(l.size())) {
          return Value::Undefined(Cat("list object has no element ", key.as_int()));
        }
        return l[i];
      }
      std::vector<uint32_t> cps = DecodeUtf8(obj.as_string());
      if (i < 0) i += int64_t(cps.size());
      if (i < 0 || i >= int64_t(cps.size())) {
        return Value::Undefined(Cat("str object has no element ", key.as_int()));
      }
      return Value(EncodeUtf8(cps, i, i + 1));
    }
    if (key.is_string()) return GetAttr(obj, key.as_string());
    return Value::Undefined(Cat("'", obj.TypeName(), " object' has no element ",
                                         key.Repr()));
  }

  absl::StatusOr<Value> Slice(const Expr& e, const Value& obj) {
    int64_t parts[3];
    bool given[3];
    for (int k = 0; k < 3; ++k) {
      given[k] = false;
      const ExprPtr& p = e.args[k + 1];
      if (p == nullptr) continue;
      auto v = Eval(*p);
      if (!v.ok()) return v.status();
      if (v->is_none()) continue;
      if (!v->is_int() && !v->is_bool()) return Err(e, "slice indices must be integers");
      parts[k] = v->as_int();
      given[k] = true;
    }
    int64_t step = given[2] ? parts[2] : 1;
    if (step == 0) return Err(e, "slice step cannot be zero");
    std::vector<uint32_t> cps;
    int64_t n;
    if (obj.is_list()) {
      n = int64_t(obj.as_list().size());
    } else if (obj.is_string()) {
      cps = DecodeUtf8(obj.as_string());
      n = int64_t(cps.size());
    } else if (obj.is_undefined()) {
      return Err(e, obj.undefined_hint());
    } else {
      return Err(e, Cat("'", obj.TypeName(), "' object is not subscriptable"));
    }
    // Python slice.indices().
    auto clamp = [&](int64_t v, bool is_start) {
      if (v < 0) v += n;
      if (step > 0) return std::clamp<int64_t>(v, 0, n);
      (void)is_start;
      return std::clamp<int64_t>(v, -1, n - 1);
    };
    int64_t start = given[0] ? clamp(parts[0], true) : (step > 0 ? 0 : n - 1);
    int64_t stop = given[1] ? clamp(parts[1], false) : (step > 0 ? n : -1);
    std::vector<int64_t> idx;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) idx.push_back(i);
    if (obj.is_list()) {
      List out;
      for (int64_t i : idx) out.push_back(obj.as_list()[i]);
      return obj.is_tuple() ? Value::Tuple(std::move(out)) : Value(std::move(out));
    }
    std::vector<uint32_t> sel;
    for (int64_t i : idx) sel.push_back(cps[i]);
    return Value(EncodeUtf8(sel, 0, sel.size()));
  }

  absl::StatusOr<Value> CallFunction(const Expr& e, const Value& fn, const CallArgs& a) {
    if (fn.kind() == Value::Kind::kMacro) return CallMacro(e, *fn.macro(), a);
    const std::string& name = fn.as_string();
    if (name == "raise_exception") {
      // The template's own message, unprefixed, so callers can show it.
      return absl::InvalidArgumentError(a.pos.empty() ? "" : a.pos[0].Str());
    }
    if (name == "strftime_now") {
      if (a.pos.empty() || !a.pos[0].is_string()) {
        return Err(e, "strftime_now() needs a format string");
      }
      if (opts_.strftime_now) return Value(opts_.strftime_now(a.pos[0].as_string()));
      std::time_t t = std::time(nullptr);
      std::tm tm;
      localtime_r(&t, &tm);
      char buf[512];
      size_t n = std::strftime(buf, sizeof(buf), a.pos[0].as_string().c_str(), &tm);
      return Value(std::string(buf, n));
    }
    if (name == "namespace" || name == "dict") {
      Dict d;
      if (!a.pos.empty()) {
        if (a.pos.size() > 1 || !a.pos[0].is_dict()) {
          return Err(e, Cat(name, "() takes keyword arguments or one dict"));
        }
        d = a.pos[0].as_dict();
      }
      for (const auto& [k, v] : a.kw) {
        bool replaced = false;
        for (auto& [k2, v2] : d) {
          if (k2 == k) {
            v2 = v;
            replaced = true;
          }
        }
        if (!replaced) d.emplace_back(k, v);
      }
      return name == "namespace" ? Value::Namespace(std::move(d)) : Value(std::move(d));
    }
    if (name == "range") {
      int64_t p[3] = {0, 0, 1};
      if (a.pos.empty() || a.pos.size() > 3 || !a.kw.empty()) {
        return Err(e, "range() takes 1 to 3 integer arguments");
      }
      for (size_t i = 0; i < a.pos.size(); ++i) {
        if (!a.pos[i].is_int() && !a.pos[i].is_bool()) {
          return Err(e, "range() arguments must be integers");
        }
      }
      if (a.pos.size() == 1) {
        p[1] = a.pos[0].as_int();
      } else {
        p[0] = a.pos[0].as_int();
        p[1] = a.pos[1].as_int();
        if (a.pos.size() == 3) p[2] = a.pos[2].as_int();
      }
      if (p[2] == 0) return Err(e, "range() arg 3 must not be zero");
      List out;
      for (int64_t i = p[0]; p[2] > 0 ? i < p[1] : i > p[1]; i += p[2]) {
        if (int64_t(out.size()) >= opts_.max_loop_iterations) {
          return Err(e, "range() too large");
        }
        out.emplace_back(i);
      }
      return Value(std::move(out));
    }
    return Err(e, Cat("unknown function '", name, "'"));
  }

  absl::StatusOr<Value> CallMacro(const Expr& e, const Stmt& m, const CallArgs& a) {
    if (a.pos.size() > m.params.size()) {
      return Err(e, Cat("macro '", m.name, "' takes at most ",
                                 m.params.size(), " arguments"));
    }
    if (call_depth_ >= opts_.max_call_depth) {
      return Err(e, "macro calls nested too deeply");
    }
    frames_.emplace_back();
    for (size_t i = 0; i < m.params.size(); ++i) {
      Value v;
      bool set = false;
      if (i < a.pos.size()) {
        v = a.pos[i];
        set = true;
      }
      for (const auto& [k, x] : a.kw) {
        if (k == m.params[i]) {
          v = x;
          set = true;
        }
      }
      if (!set && m.defaults[i] != nullptr) {
        auto d = Eval(*m.defaults[i]);
        if (!d.ok()) {
          frames_.pop_back();
          return d.status();
        }
        v = std::move(*d);
      } else if (!set) {
        v = Value::Undefined(Cat("'", m.params[i], "' is undefined"));
      }
      Assign(m.params[i], std::move(v));
    }
    for (const auto& [k, x] : a.kw) {
      if (std::find(m.params.begin(), m.params.end(), k) == m.params.end()) {
        frames_.pop_back();
        return Err(e, Cat("macro '", m.name, "' has no parameter '", k, "'"));
      }
    }
    ++call_depth_;
    int saved_loops = loop_depth_;
    loop_depth_ = 0;
    auto text = Capture(m.body);
    loop_depth_ = saved_loops;
    --call_depth_;
    frames_.pop_back();
    if (!text.ok()) return text.status();
    return Value(std::move(*text));
  }

  absl::StatusOr<Value> Binary(const Expr& e, const Value& a, const Value& b) {
    const std::string& op = e.name;
    if (op == "==") return Value(a.Equals(b));
    if (op == "!=") return Value(!a.Equals(b));
    if (op == "~") {
      std::string s = a.Str() + b.Str();
      if (s.size() > opts_.max_output_bytes) return Err(e, "string too large");
      return Value(std::move(s));
    }
    if (a.is_undefined()) return Err(e, a.undefined_hint());
    if (b.is_undefined()) return Err(e, b.undefined_hint());
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      bool swap = op == ">" || op == "<=";
      auto r = swap ? Less(b, a) : Less(a, b);
      if (!r.ok()) return At(e, r.status());
      bool lt = *r;
      return Value(op == "<" || op == ">" ? lt : !lt);
    }
    if (op == "in") {
      auto r = ApplyTest("in", a, {b});
      if (!r.ok()) return At(e, r.status());
      return Value(*r);
    }
    auto type_error = [&]() {
      return Err(e, Cat("unsupported operand type(s) for ", op, ": '",
                                 a.TypeName(), "' and '", b.TypeName(), "'"));
    };
    if (op == "+") {
      if (a.is_string() && b.is_string()) {
        if (a.as_string().size() + b.as_string().size() > opts_.max_output_bytes) {
          return Err(e, "string too large");
        }
        return Value(a.as_string() + b.as_string());
      }
      if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
        List l = a.as_list();
        l.insert(l.end(), b.as_list().begin(), b.as_list().end());
        if (l.size() > opts_.max_output_bytes) return Err(e, "list too large");
        return a.is_tuple() ? Value::Tuple(std::move(l)) : Value(std::move(l));
      }
    }
    if (op == "*" && (a.is_string() || a.is_list() || b.is_string() || b.is_list())) {
      const Value& seq = (a.is_string() || a.is_list()) ? a : b;
      const Value& n = (a.is_string() || a.is_list()) ? b : a;
      if (!n.is_int() && !n.is_bool()) return type_error();
      int64_t count = std::max<int64_t>(0, n.as_int());
      size_t unit = seq.is_string() ? seq.as_string().size() : seq.as_list().size();
      if (unit != 0 && uint64_t(count) > opts_.max_output_bytes / unit) {
        return Err(e, "repeated sequence too large");
      }
      if (seq.is_string()) {
        std::string s;
        for (int64_t i = 0; i < count; ++i) s += seq.as_string();
        return Value(std::move(s));
      }
      List l;
      for (int64_t i = 0; i < count; ++i) {
        l.insert(l.end(), seq.as_list().begin(), seq.as_list().end());
      }
      return Value(std::move(l));
    }
    if (!a.is_number() || !b.is_number()) return type_error();
    bool fl = a.is_float() || b.is_float();
    if (op == "/") {
      if (b.as_double() == 0) return Err(e, "division by zero");
      return Value(a.as_double() / b.as_double());
    }
    if (fl) {
      double x = a.as_double(), y = b.as_double();
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
      if (op == "**") return Value(std::pow(x, y));
      if (y == 0) return Err(e, "float division by zero");
      if (op == "//") return Value(std::floor(x / y));
      if (op == "%") {
        double r = std::fmod(x, y);
        if (r != 0 && ((r < 0) != (y < 0))) r += y;
        return Value(r);
      }
      return type_error();
    }
    int64_t x = a.as_int(), y = b.as_int(), r = 0;
    if (op == "+" || op == "-" || op == "*") {
      bool overflow = op == "+"   ? __builtin_add_overflow(x, y, &r)
                      : op == "-" ? __builtin_sub_overflow(x, y, &r)
                                  : __builtin_mul_overflow(x, y, &r);
      if (overflow) return Err(e, "integer overflow");
      return Value(r);
    }
    if (op == "**") {
      if (y < 0) return Value(std::pow(double(x), double(y)));
      r = 1;
      for (int64_t i = 0; i < y; ++i) {
        if (__builtin_mul_overflow(r, x, &r)) return Err(e, "integer overflow");
        if (r == 0 || r == 1) break;
      }
      return Value(r);
    }
    if (y == 0) return Err(e, "integer division or modulo by zero");
    if (x == INT64_MIN && y == -1) return Err(e, "integer overflow");
    int64_t q = x / y, m = x % y;
    if (m != 0 && ((m < 0) != (y < 0))) {
      --q;
      m += y;
    }
    if (op == "//") return Value(q);
    if (op == "%") return Value(m);
    return type_error();
  }

  absl::StatusOr<Value> EvalInner(const Expr& e) {
    switch (e.op) {
      case Expr::Op::kLiteral:
        return e.literal;
      case Expr::Op::kName:
        return Lookup(e.name);
      case Expr::Op::kList:
      case Expr::Op::kTuple: {
        List l;
        for (const ExprPtr& x : e.args) {
          auto v = Eval(*x);
          if (!v.ok()) return v.status();
          l.push_back(std::move(*v));
        }
        return e.op == Expr::Op::kTuple ? Value::Tuple(std::move(l)) : Value(std::move(l));
      }
      case Expr::Op::kDict: {
        Dict d;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          auto k = Eval(*e.args[i]);
          if (!k.ok()) return k.status();
          auto v = Eval(*e.args[i + 1]);
          if (!v.ok()) return v.status();
          if (!k->is_string()) return Err(*e.args[i], "only string dict keys are supported");
          bool replaced = false;
          for (auto& [k2, v2] : d) {
            if (k2 == k->as_string()) {
              v2 = *v;
              replaced = true;
            }
          }
          if (!replaced) d.emplace_back(k->as_string(), std::move(*v));
        }
        return Value(std::move(d));
      }
      case Expr::Op::kAttr: {
        auto obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        if (obj->is_undefined()) return Err(e, obj->undefined_hint());
        return GetAttr(*obj, e.name);
      }
      case Expr::Op::kItem: {
        auto obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        auto key = Eval(*e.args[1]);
        if (!key.ok()) return key;
        return GetItem(e, *obj, *key);
      }
      case Expr::Op::kSlice: {
        auto obj = Eval(*e.args[0]);
        if (!obj.ok()) return obj;
        return Slice(e, *obj);
      }
      case Expr::Op::kCall: {
        const Expr& callee = *e.args[0];
        auto args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        if (callee.op == Expr::Op::kAttr) {
          auto obj = Eval(*callee.args[0]);
          if (!obj.ok()) return obj;
          if (obj->is_undefined()) return Err(callee, obj->undefined_hint());
          bool found = false;
          auto r = CallMethod(*obj, callee.name, *args, &found);
          if (found) {
            if (!r.ok()) return At(e, r.status());
            return r;
          }
          Value fn = GetAttr(*obj, callee.name);
          if (fn.is_undefined()) return Err(callee, fn.undefined_hint());
          if (!fn.is_callable()) return Err(e, Cat("'", fn.TypeName(), "' object is not callable"));
          return CallFunction(e, fn, *args);
        }
        auto fn = Eval(callee);
        if (!fn.ok()) return fn;
        if (fn->is_undefined()) return Err(callee, fn->undefined_hint());
        if (!fn->is_callable()) {
          return Err(e, Cat("'", fn->TypeName(), "' object is not callable"));
        }
        return CallFunction(e, *fn, *args);
      }
      case Expr::Op::kFilter: {
        auto in = Eval(*e.args[0]);
        if (!in.ok()) return in;
        auto args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        auto r = ApplyFilter(e.name, *in, *args, opts_.max_output_bytes);
        if (!r.ok()) return At(e, r.status());
        return r;
      }
      case Expr::Op::kTest: {
        auto in = Eval(*e.args[0]);
        if (!in.ok()) return in;
        auto args = EvalArgs(e, 1);
        if (!args.ok()) return args.status();
        auto r = ApplyTest(e.name, *in, args->pos);
        if (!r.ok()) return At(e, r.status());
        return Value(*r != e.negated);
      }
      case Expr::Op::kNot: {
        auto v = Eval(*e.args[0]);
        if (!v.ok()) return v;
        return Value(!v->Truthy());
      }
      case Expr::Op::kNeg:
      case Expr::Op::kPos: {
        auto v = Eval(*e.args[0]);
        if (!v.ok()) return v;
        if (v->is_undefined()) return Err(e, v->undefined_hint());
        if (!v->is_number()) {
          return Err(e, Cat("bad operand type for unary ", e.op == Expr::Op::kNeg ? "-" : "+",
                                     ": '", v->TypeName(), "'"));
        }
        if (e.op == Expr::Op::kPos) return v->is_bool() ? Value(v->as_int()) : *v;
        if (v->is_float()) return Value(-v->as_double());
        if (v->as_int() == INT64_MIN) return Err(e, "integer overflow");
        return Value(-v->as_int());
      }
      case Expr::Op::kBinary: {
        auto a = Eval(*e.args[0]);
        if (!a.ok()) return a;
        auto b = Eval(*e.args[1]);
        if (!b.ok()) return b;
        return Binary(e, *a, *b);
      }
      case Expr::Op::kNotIn: {
        auto a = Eval(*e.args[0]);
        if (!a.ok()) return a;
        auto b = Eval(*e.args[1]);
        if (!b.ok()) return b;
        if (a->is_undefined()) return Err(e, a->undefined_hint());
        auto r = ApplyTest("in", *a, {*b});
        if (!r.ok()) return At(e, r.status());
        return Value(!*r);
      }
      case Expr::Op::kAnd:
      case Expr::Op::kOr: {
        auto a = Eval(*e.args[0]);
        if (!a.ok()) return a;
        if (a->Truthy() == (e.op == Expr::Op::kOr)) return a;
        return Eval(*e.args[1]);
      }
      case Expr::Op::kCond: {
        auto c = Eval(*e.args[1]);
        if (!c.ok()) return c;
        if (c->Truthy()) return Eval(*e.args[0]);
        if (e.args[2] == nullptr) return Value::Undefined("the inline if-expression evaluated to false");
        return Eval(*e.args[2]);
      }
    }
    return Err(e, "unknown expression");
  }

  const std::string& name_;
  const RenderOptions& opts_;
  std::vector<Dict> frames_;
  std::string* out_ = nullptr;
  int64_t iterations_ = 0;
  int eval_depth_ = 0;
  int call_depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace
}  // namespace internal

absl::StatusOr<Template> Template::Parse(std::string_view source,
                                         std::string_view name) {
  Template t;
  t.name_ = std::make_shared<const std::string>(name);
  auto body = internal::ParseTemplate(source, *t.name_);
  if (!body.ok()) return body.status();
  t.body_ = std::make_shared<const internal::Body>(std::move(*body));
  return t;
}

absl::StatusOr<std::string> Template::Render(const Dict& root,
                                             const RenderOptions& options) const {
  std::string out;
  internal::Renderer r(*name_, options);
  if (auto st = r.Run(*body_, root, &out); !st.ok()) return st;
  return out;
}

}  // namespace kvfold::jinja
