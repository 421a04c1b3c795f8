// A small Jinja2 evaluator for Hugging Face chat templates.
//
// It covers the subset of Jinja2 that chat templates use, with the semantics
// of the environment transformers builds in `_compile_jinja_template`
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
// raise_exception, strftime_now, transformers' tojson): a lexer, a parser to
// an AST and a tree-walking interpreter. Anything outside the subset (an
// unknown tag, filter, test or method) is an error naming the construct and
// its line:column, never a crash. Nesting depth, loop iterations and output
// size are bounded so that hostile templates cannot exhaust the stack or
// memory.
#ifndef KVFOLD_MODELS_CHAT_JINJA_H_
#define KVFOLD_MODELS_CHAT_JINJA_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvfold::jinja {

namespace internal {
struct Stmt;
}  // namespace internal

class Value;
using List = std::vector<Value>;
// Insertion-ordered like Python dicts (tojson and iteration keep the order).
using Dict = std::vector<std::pair<std::string, Value>>;

// A Jinja/Python value. Lists and dicts are immutable once built and shared
// on copy; a namespace() object is mutable and shared by reference, as in
// Jinja2.
class Value {
 public:
  enum class Kind {
    kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict,
    kNamespace, kFunction, kMacro,
  };

  Value() = default;  // undefined
  Value(bool b) : kind_(Kind::kBool), int_(b) {}  // NOLINT
  Value(int v) : kind_(Kind::kInt), int_(v) {}  // NOLINT
  Value(int64_t v) : kind_(Kind::kInt), int_(v) {}  // NOLINT
  Value(double v) : kind_(Kind::kFloat), float_(v) {}  // NOLINT
  Value(std::string s) : kind_(Kind::kString), str_(std::move(s)) {}  // NOLINT
  Value(const char* s) : kind_(Kind::kString), str_(s) {}  // NOLINT
  Value(List l);  // NOLINT
  Value(Dict d);  // NOLINT

  static Value None();
  // An undefined value; `hint` is the error raised when it is used
  // (e.g. "'foo' is undefined").
  static Value Undefined(std::string hint);
  static Value Tuple(List items);
  static Value Namespace(Dict attrs);
  static Value Function(std::string name);  // a builtin global
  static Value Macro(const internal::Stmt* def);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::kUndefined; }
  bool is_none() const { return kind_ == Kind::kNone; }
  bool is_bool() const { return kind_ == Kind::kBool; }
  bool is_int() const { return kind_ == Kind::kInt; }
  bool is_float() const { return kind_ == Kind::kFloat; }
  bool is_number() const { return is_int() || is_float() || is_bool(); }
  bool is_string() const { return kind_ == Kind::kString; }
  bool is_list() const { return kind_ == Kind::kList; }
  bool is_tuple() const { return kind_ == Kind::kList && tuple_; }
  bool is_dict() const { return kind_ == Kind::kDict; }
  bool is_namespace() const { return kind_ == Kind::kNamespace; }
  bool is_callable() const {
    return kind_ == Kind::kFunction || kind_ == Kind::kMacro;
  }

  bool as_bool() const { return int_ != 0; }
  int64_t as_int() const { return int_; }  // also bools
  double as_double() const { return is_float() ? float_ : double(int_); }
  const std::string& as_string() const { return str_; }  // string, function
  const List& as_list() const;
  const Dict& as_dict() const;  // dict or namespace attributes
  const std::string& undefined_hint() const { return str_; }
  const internal::Stmt* macro() const { return macro_; }

  // Dict/namespace lookup; nullptr when absent.
  const Value* Find(std::string_view key) const;
  // Namespace attribute assignment (the only mutation Jinja allows).
  void SetAttribute(const std::string& key, Value v) const;

  // Python truthiness (undefined is false).
  bool Truthy() const;
  // Python str(): what `{{ v }}` prints. Undefined prints "".
  std::string Str() const;
  // Python repr().
  std::string Repr() const;
  // Deep equality as Python `==` (1 == 1.0 == True).
  bool Equals(const Value& other) const;
  // Python type name for error messages ("str", "int", "dict", ...).
  std::string TypeName() const;

 private:
  Kind kind_ = Kind::kUndefined;
  bool tuple_ = false;
  int64_t int_ = 0;
  double float_ = 0;
  std::string str_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  const internal::Stmt* macro_ = nullptr;
};

// json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=sort_keys) as
// transformers' tojson filter calls it; indent < 0 means None.
absl::StatusOr<std::string> ToJson(const Value& v, int indent = -1,
                                   bool sort_keys = false);
// Python repr() of a float ("1.0", "0.30000000000000004", "1e+16").
std::string PythonFloatRepr(double v);

struct RenderOptions {
  // strftime_now(format); the default formats the local time now.
  std::function<std::string(const std::string& format)> strftime_now;
  size_t max_output_bytes = size_t{16} << 20;
  int64_t max_loop_iterations = int64_t{1} << 20;  // all loops together
  int max_call_depth = 64;                          // macro recursion
};

class Template {
 public:
  // Parses `source`; `name` prefixes error messages ("name:line:col: ...").
  static absl::StatusOr<Template> Parse(std::string_view source,
                                        std::string_view name = "template");

  // Renders with `root` as the template's variables (on top of the globals
  // raise_exception, strftime_now, namespace, range). A raise_exception(msg)
  // call returns an error whose message is `msg`.
  absl::StatusOr<std::string> Render(const Dict& root,
                                     const RenderOptions& options = {}) const;

  const std::string& name() const { return *name_; }

 private:
  std::shared_ptr<const std::vector<std::unique_ptr<internal::Stmt>>> body_;
  std::shared_ptr<const std::string> name_;
};

// Limits of the parser (nesting of blocks and of expressions).
inline constexpr int kMaxParseDepth = 200;

}  // namespace kvfold::jinja

#endif  // KVFOLD_MODELS_CHAT_JINJA_H_
