// The AST shared by the Jinja parser (jinja_parse.cc) and interpreter
// (jinja_eval.cc). Not part of the public API.
#ifndef KVFOLD_MODELS_CHAT_JINJA_INTERNAL_H_
#define KVFOLD_MODELS_CHAT_JINJA_INTERNAL_H_

#include <memory>
#include <string_view>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "models/chat/jinja.h"

namespace kvfold::jinja::internal {

// String concatenation accepting std::string_view (Debian's absl::StrCat
// takes only absl::string_view) and integers.
template <typename T>
void AppendPiece(std::string* out, const T& v) {
  if constexpr (std::is_arithmetic_v<T>) {
    *out += std::to_string(v);
  } else if constexpr (requires { v.data(); v.size(); }) {
    out->append(v.data(), v.size());
  } else {
    *out += std::string_view(v);
  }
}
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (AppendPiece(&out, args), ...);
  return out;
}

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Op {
    kLiteral,   // literal
    kName,      // name
    kList,      // args = items
    kTuple,     // args = items
    kDict,      // args = key0, value0, key1, value1, ...
    kAttr,      // args[0].name
    kItem,      // args[0][args[1]]
    kSlice,     // args[0][args[1]:args[2]:args[3]] (null parts allowed)
    kCall,      // args[0](args[1..], kwargs)
    kFilter,    // args[0] | name(args[1..], kwargs)
    kTest,      // args[0] is [not] name(args[1..])
    kNot,       // not args[0]
    kNeg,       // -args[0]
    kPos,       // +args[0]
    kBinary,    // args[0] <name> args[1]: + - * / // % ** ~ == != < <= > >= in
    kNotIn,     // args[0] not in args[1]
    kAnd,
    kOr,
    kCond,      // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Op op;
  int line = 0, col = 0;
  Value literal;
  std::string name;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct Stmt {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // branches: (cond or null for else, body)
    kFor,       // for targets in expr [if filter]: body [else else_body]
    kSet,       // set targets = expr, or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %}body{% endset
    kMacro,     // macro name(params=defaults) body
    kBreak,
    kContinue,
    kScope,     // a block whose body is rendered in place ({% generation %})
  };
  Kind kind;
  int line = 0, col = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::pair<ExprPtr, Body>> branches;
  std::vector<std::string> targets;
  std::string attr;  // set ns.attr
  Body body, else_body;
  std::string name;  // macro name
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // aligned with params; null = required
};

// Builtins (jinja_builtins.cc). Errors carry no position; the caller adds it.
struct CallArgs {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};
bool IsKnownFilter(std::string_view name);
bool IsKnownTest(std::string_view name);
absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& in,
                                  const CallArgs& args, size_t max_size);
absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v,
                               const std::vector<Value>& args);
// obj.name(args) for str/dict methods; *found = false if there is none.
absl::StatusOr<Value> CallMethod(const Value& obj, std::string_view name,
                                 const CallArgs& args, bool* found);
// Items a for loop (or list()) sees: list items, dict keys, characters.
absl::StatusOr<List> Iterate(const Value& v);
// Python < on numbers, strings and lists.
absl::StatusOr<bool> Less(const Value& a, const Value& b);
// Unicode helpers: code points of UTF-8 text and back.
std::vector<uint32_t> DecodeUtf8(std::string_view s);
std::string EncodeUtf8(const std::vector<uint32_t>& cps, size_t begin,
                       size_t end);

// Parses a template into statements; errors name `name:line:col`.
absl::StatusOr<Body> ParseTemplate(std::string_view source,
                                   const std::string& name);

}  // namespace kvfold::jinja::internal

#endif  // KVFOLD_MODELS_CHAT_JINJA_INTERNAL_H_
