// Jinja filters, tests and str/dict methods used by chat templates, with
// the behaviour of jinja2 3.1 / Python 3 (plus transformers' tojson).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>
#include <string_view>

#include "models/chat/jinja_internal.h"

namespace kvfold::jinja::internal {

std::vector<uint32_t> DecodeUtf8(std::string_view s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = s[i];
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3
            : (c >> 3) == 30 ? 4 : 1;
    if (i + n > s.size()) n = 1;
    uint32_t cp = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (int k = 1; k < n; ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
    out.push_back(cp);
    i += n;
  }
  return out;
}

std::string EncodeUtf8(const std::vector<uint32_t>& cps, size_t begin,
                       size_t end) {
  std::string out;
  for (size_t i = begin; i < end && i < cps.size(); ++i) {
    uint32_t cp = cps[i];
    if (cp < 0x80) {
      out += char(cp);
    } else if (cp < 0x800) {
      out += char(0xC0 | (cp >> 6));
      out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += char(0xE0 | (cp >> 12));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    } else {
      out += char(0xF0 | (cp >> 18));
      out += char(0x80 | ((cp >> 12) & 0x3F));
      out += char(0x80 | ((cp >> 6) & 0x3F));
      out += char(0x80 | (cp & 0x3F));
    }
  }
  return out;
}

namespace {

// str.isspace() code points.
bool PySpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 ||
         c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
         c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// str.strip/lstrip/rstrip with optional `chars`.
std::string Strip(const std::string& s, const Value* chars, bool left,
                  bool right) {
  std::vector<uint32_t> cps = DecodeUtf8(s);
  std::vector<uint32_t> set;
  bool custom = chars != nullptr && chars->is_string();
  if (custom) set = DecodeUtf8(chars->as_string());
  auto strip = [&](uint32_t c) {
    return custom ? std::find(set.begin(), set.end(), c) != set.end()
                  : PySpace(c);
  };
  size_t b = 0, e = cps.size();
  if (left) {
    while (b < e && strip(cps[b])) ++b;
  }
  if (right) {
    while (e > b && strip(cps[e - 1])) --e;
  }
  return EncodeUtf8(cps, b, e);
}

std::string AsciiCase(std::string s, bool upper) {
  for (char& c : s) {
    c = upper ? std::toupper(static_cast<unsigned char>(c))
              : std::tolower(static_cast<unsigned char>(c));
  }
  return s;
}

std::string Title(const std::string& s) {
  std::string out = s;
  bool prev_cased = false;
  for (char& c : out) {
    unsigned char u = c;
    if (std::isalpha(u)) {
      c = prev_cased ? std::tolower(u) : std::toupper(u);
      prev_cased = true;
    } else {
      prev_cased = false;
    }
  }
  return out;
}

std::string Replace(const std::string& s, const std::string& from,
                    const std::string& to, int64_t count) {
  if (from.empty()) {
    // Python inserts `to` between every character.
    std::vector<uint32_t> cps = DecodeUtf8(s);
    std::string out;
    int64_t n = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
      if (count < 0 || n < count) {
        out += to;
        ++n;
      }
      if (i < cps.size()) out += EncodeUtf8(cps, i, i + 1);
    }
    return out;
  }
  std::string out;
  size_t pos = 0;
  int64_t n = 0;
  while (count < 0 || n < count) {
    size_t f = s.find(from, pos);
    if (f == std::string::npos) break;
    out.append(s, pos, f - pos);
    out += to;
    pos = f + from.size();
    ++n;
  }
  out.append(s, pos, std::string::npos);
  return out;
}

List Split(const std::string& s, const Value* sep, int64_t maxsplit) {
  List out;
  if (sep == nullptr || sep->is_none()) {
    std::vector<uint32_t> cps = DecodeUtf8(s);
    size_t i = 0;
    while (true) {
      while (i < cps.size() && PySpace(cps[i])) ++i;
      if (i >= cps.size()) break;
      if (maxsplit >= 0 && int64_t(out.size()) >= maxsplit) {
        size_t e = cps.size();
        while (e > i && PySpace(cps[e - 1])) --e;
        out.emplace_back(EncodeUtf8(cps, i, e));
        break;
      }
      size_t j = i;
      while (j < cps.size() && !PySpace(cps[j])) ++j;
      out.emplace_back(EncodeUtf8(cps, i, j));
      i = j;
    }
    return out;
  }
  const std::string& d = sep->as_string();
  size_t pos = 0;
  while (maxsplit < 0 || int64_t(out.size()) < maxsplit) {
    size_t f = s.find(d, pos);
    if (f == std::string::npos) break;
    out.emplace_back(s.substr(pos, f - pos));
    pos = f + d.size();
  }
  out.emplace_back(s.substr(pos));
  return out;
}

// Positional-or-keyword argument `i`/`name`; nullptr when absent.
const Value* GetArg(const CallArgs& a, size_t i, std::string_view name) {
  if (i < a.pos.size()) return &a.pos[i];
  for (const auto& [k, v] : a.kw) {
    if (k == name) return &v;
  }
  return nullptr;
}

absl::Status CheckArgs(const CallArgs& a, std::string_view what,
                       std::initializer_list<std::string_view> names) {
  if (a.pos.size() > names.size()) {
    return absl::InvalidArgumentError(
        Cat(what, "() takes at most ", names.size(), " arguments"));
  }
  for (const auto& [k, v] : a.kw) {
    if (std::find(names.begin(), names.end(), k) == names.end()) {
      return absl::InvalidArgumentError(
          Cat(what, "() got an unexpected keyword argument '", k, "'"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> IntArg(const Value* v, int64_t dflt,
                               std::string_view what) {
  if (v == nullptr || v->is_none()) return dflt;
  if (v->is_int() || v->is_bool()) return v->as_int();
  return absl::InvalidArgumentError(
      Cat(what, ": expected an integer, got ", v->TypeName()));
}

absl::StatusOr<Value> Length(const Value& v) {
  if (v.is_string()) return Value(int64_t(DecodeUtf8(v.as_string()).size()));
  if (v.is_list()) return Value(int64_t(v.as_list().size()));
  if (v.is_dict() || v.is_namespace()) return Value(int64_t(v.as_dict().size()));
  if (v.is_undefined()) return Value(0);
  return absl::InvalidArgumentError(
      Cat("object of type '", v.TypeName(), "' has no len()"));
}

// Attribute lookup as used by selectattr/map(attribute=...): "a.b" paths.
Value GetAttrPath(const Value& v, const std::string& path) {
  Value cur = v;
  size_t pos = 0;
  while (pos <= path.size()) {
    size_t dot = path.find('.', pos);
    std::string part = path.substr(pos, dot == std::string::npos ? dot : dot - pos);
    const Value* f = cur.Find(part);
    if (f != nullptr) {
      cur = *f;
    } else if (cur.is_list() && !part.empty() &&
               std::all_of(part.begin(), part.end(), ::isdigit)) {
      size_t idx = std::stoul(part);
      if (idx >= cur.as_list().size()) return Value::Undefined("no such item");
      cur = cur.as_list()[idx];
    } else {
      return Value::Undefined(Cat("'", cur.TypeName(),
                                           " object' has no attribute '",
                                           part, "'"));
    }
    if (dot == std::string::npos) break;
    pos = dot + 1;
  }
  return cur;
}

const char* const kFilters[] = {
    "abs",   "capitalize", "count",   "d",          "default", "dictsort",
    "first", "float",      "int",     "items",      "join",    "last",
    "length", "list",      "lower",   "map",        "max",     "min",
    "reject", "rejectattr", "replace", "reverse",   "safe",    "select",
    "selectattr", "sort",  "string",  "sum",        "title",   "tojson",
    "trim",  "unique",     "upper",   "wordcount"};
const char* const kTests[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even",
    "false",   "float",    "ge",      "gt",   "greaterthan", "in", "integer",
    "iterable", "le",      "lessthan", "lower", "lt", "mapping", "ne", "none",
    "number",  "odd",      "sameas",  "sequence", "string", "true", "undefined",
    "upper",   "==",       "!=",      "<",    "<=",   ">",    ">="};

}  // namespace

bool IsKnownFilter(std::string_view name) {
  for (const char* f : kFilters) {
    if (name == f) return true;
  }
  return false;
}

bool IsKnownTest(std::string_view name) {
  for (const char* t : kTests) {
    if (name == t) return true;
  }
  return false;
}

absl::StatusOr<List> Iterate(const Value& v) {
  if (v.is_list()) return v.as_list();
  if (v.is_undefined()) return List();
  if (v.is_dict()) {
    List keys;
    for (const auto& [k, x] : v.as_dict()) keys.emplace_back(k);
    return keys;
  }
  if (v.is_string()) {
    std::vector<uint32_t> cps = DecodeUtf8(v.as_string());
    List chars;
    for (size_t i = 0; i < cps.size(); ++i) {
      chars.emplace_back(EncodeUtf8(cps, i, i + 1));
    }
    return chars;
  }
  return absl::InvalidArgumentError(
      Cat("'", v.TypeName(), "' object is not iterable"));
}

absl::StatusOr<bool> Less(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.is_float() || b.is_float()) return a.as_double() < b.as_double();
    return a.as_int() < b.as_int();
  }
  if (a.is_string() && b.is_string()) return a.as_string() < b.as_string();
  if (a.is_list() && b.is_list()) {
    const List &x = a.as_list(), &y = b.as_list();
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      if (x[i].Equals(y[i])) continue;
      return Less(x[i], y[i]);
    }
    return x.size() < y.size();
  }
  return absl::InvalidArgumentError(
      Cat("'<' not supported between instances of '", a.TypeName(),
                   "' and '", b.TypeName(), "'"));
}

absl::StatusOr<bool> ApplyTest(std::string_view name, const Value& v,
                               const std::vector<Value>& args) {
  auto arg = [&](size_t i) -> absl::StatusOr<Value> {
    if (i >= args.size()) {
      return absl::InvalidArgumentError(
          Cat("test '", name, "' needs an argument"));
    }
    return args[i];
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.is_int();
  if (name == "float") return v.is_float();
  if (name == "boolean") return v.is_bool();
  if (name == "true") return v.is_bool() && v.as_bool();
  if (name == "false") return v.is_bool() && !v.as_bool();
  if (name == "mapping") return v.is_dict();
  if (name == "callable") return v.is_callable();
  if (name == "iterable") {
    return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  }
  if (name == "sequence") {
    return v.is_list() || v.is_dict() || v.is_string() || v.is_undefined();
  }
  if (name == "lower" || name == "upper") {
    std::string s = v.Str();
    return s == AsciiCase(s, name == "upper");
  }
  if (name == "odd" || name == "even" || name == "divisibleby") {
    if (!v.is_int() && !v.is_bool()) {
      return absl::InvalidArgumentError(
          Cat("test '", name, "' needs an integer"));
    }
    if (name == "odd") return v.as_int() % 2 != 0;
    if (name == "even") return v.as_int() % 2 == 0;
    auto d = arg(0);
    if (!d.ok()) return d.status();
    if (!d->is_int() || d->as_int() == 0) {
      return absl::InvalidArgumentError("divisibleby needs a non-zero integer");
    }
    return v.as_int() % d->as_int() == 0;
  }
  auto other = arg(0);
  if (!other.ok()) return other.status();
  if (name == "eq" || name == "equalto" || name == "==") return v.Equals(*other);
  if (name == "ne" || name == "!=") return !v.Equals(*other);
  if (name == "sameas") {
    return v.kind() == other->kind() && v.Equals(*other);
  }
  if (name == "in") {
    const Value& c = *other;
    if (c.is_string()) {
      return v.is_string() && c.as_string().find(v.as_string()) != std::string::npos;
    }
    if (c.is_dict()) return v.is_string() && c.Find(v.as_string()) != nullptr;
    auto items = Iterate(c);
    if (!items.ok()) return items.status();
    for (const Value& x : *items) {
      if (x.Equals(v)) return true;
    }
    return false;
  }
  if (name == "lt" || name == "lessthan" || name == "<") return Less(v, *other);
  if (name == "gt" || name == "greaterthan" || name == ">") return Less(*other, v);
  if (name == "le" || name == "<=") {
    auto r = Less(*other, v);
    if (!r.ok()) return r;
    return !*r;
  }
  if (name == "ge" || name == ">=") {
    auto r = Less(v, *other);
    if (!r.ok()) return r;
    return !*r;
  }
  return absl::InvalidArgumentError(Cat("no test named '", name, "'"));
}

namespace {

// select/reject/selectattr/rejectattr.
absl::StatusOr<Value> SelectFilter(std::string_view name, const Value& in,
                                   const CallArgs& a) {
  bool by_attr = name == "selectattr" || name == "rejectattr";
  bool keep = name == "select" || name == "selectattr";
  size_t first = 0;
  std::string attr;
  if (by_attr) {
    if (a.pos.empty() || !a.pos[0].is_string()) {
      return absl::InvalidArgumentError(
          Cat(name, "() needs an attribute name"));
    }
    attr = a.pos[0].as_string();
    first = 1;
  }
  std::string test;
  std::vector<Value> test_args;
  if (a.pos.size() > first) {
    if (!a.pos[first].is_string()) {
      return absl::InvalidArgumentError(Cat(name, "(): test name must be a string"));
    }
    test = a.pos[first].as_string();
    if (!IsKnownTest(test)) {
      return absl::InvalidArgumentError(Cat("no test named '", test, "'"));
    }
    test_args.assign(a.pos.begin() + first + 1, a.pos.end());
  }
  auto items = Iterate(in);
  if (!items.ok()) return items.status();
  List out;
  for (const Value& item : *items) {
    Value v = by_attr ? GetAttrPath(item, attr) : item;
    bool ok;
    if (test.empty()) {
      ok = v.Truthy();
    } else {
      auto r = ApplyTest(test, v, test_args);
      if (!r.ok()) return r.status();
      ok = *r;
    }
    if (ok == keep) out.push_back(item);
  }
  return Value(std::move(out));
}

absl::StatusOr<Value> SortFilter(const Value& in, const CallArgs& a) {
  if (auto st = CheckArgs(a, "sort", {"reverse", "case_sensitive", "attribute"});
      !st.ok()) {
    return st;
  }
  auto items = Iterate(in);
  if (!items.ok()) return items.status();
  const Value* rev = GetArg(a, 0, "reverse");
  const Value* cs = GetArg(a, 1, "case_sensitive");
  const Value* attr = GetArg(a, 2, "attribute");
  bool case_sensitive = cs != nullptr && cs->Truthy();
  auto key = [&](const Value& v) {
    Value k = attr != nullptr ? GetAttrPath(v, attr->Str()) : v;
    if (k.is_string() && !case_sensitive) return Value(AsciiCase(k.as_string(), false));
    return k;
  };
  List sorted = *items;
  absl::Status err;
  std::stable_sort(sorted.begin(), sorted.end(), [&](const Value& x, const Value& y) {
    auto r = Less(key(x), key(y));
    if (!r.ok()) {
      err = r.status();
      return false;
    }
    return *r;
  });
  if (!err.ok()) return err;
  if (rev != nullptr && rev->Truthy()) std::reverse(sorted.begin(), sorted.end());
  return Value(std::move(sorted));
}

}  // namespace

absl::StatusOr<Value> ApplyFilter(std::string_view name, const Value& in,
                                  const CallArgs& a, size_t max_size) {
  if (name == "safe") return in;
  if (name == "length" || name == "count") return Length(in);
  if (name == "string") return Value(in.Str());
  if (name == "trim") {
    return Value(Strip(in.Str(), GetArg(a, 0, "chars"), true, true));
  }
  if (name == "upper" || name == "lower") {
    return Value(AsciiCase(in.Str(), name == "upper"));
  }
  if (name == "capitalize") {
    std::string s = AsciiCase(in.Str(), false);
    if (!s.empty()) s[0] = std::toupper(static_cast<unsigned char>(s[0]));
    return Value(s);
  }
  if (name == "title") return Value(Title(in.Str()));
  if (name == "default" || name == "d") {
    const Value* dflt = GetArg(a, 0, "default_value");
    const Value* boolean = GetArg(a, 1, "boolean");
    bool use = in.is_undefined() ||
               (boolean != nullptr && boolean->Truthy() && !in.Truthy());
    if (!use) return in;
    return dflt != nullptr ? *dflt : Value("");
  }
  if (name == "tojson") {
    if (auto st = CheckArgs(a, "tojson",
                            {"ensure_ascii", "indent", "separators", "sort_keys"});
        !st.ok()) {
      return st;
    }
    // transformers: tojson(x, ensure_ascii=False, indent=None,
    // separators=None, sort_keys=False)
    const Value* ascii = GetArg(a, 0, "ensure_ascii");
    const Value* indent = GetArg(a, 1, "indent");
    const Value* seps = GetArg(a, 2, "separators");
    const Value* sort = GetArg(a, 3, "sort_keys");
    if ((ascii != nullptr && ascii->Truthy()) || (seps != nullptr && !seps->is_none())) {
      return absl::UnimplementedError("tojson: ensure_ascii/separators are not supported");
    }
    auto n = IntArg(indent, -1, "tojson indent");
    if (!n.ok()) return n.status();
    if (*n > 64) return absl::InvalidArgumentError("tojson: indent too large");
    auto s = ToJson(in, *n < 0 ? -1 : int(*n), sort != nullptr && sort->Truthy());
    if (!s.ok()) return s.status();
    if (s->size() > max_size) return absl::ResourceExhaustedError("tojson output too large");
    return Value(std::move(*s));
  }
  if (name == "replace") {
    const Value* from = GetArg(a, 0, "old");
    const Value* to = GetArg(a, 1, "new");
    if (from == nullptr || to == nullptr) {
      return absl::InvalidArgumentError("replace() needs old and new");
    }
    auto count = IntArg(GetArg(a, 2, "count"), -1, "replace count");
    if (!count.ok()) return count.status();
    std::string r = Replace(in.Str(), from->Str(), to->Str(), *count);
    if (r.size() > max_size) return absl::ResourceExhaustedError("string too large");
    return Value(std::move(r));
  }
  if (name == "int") {
    const Value* dflt = GetArg(a, 0, "default");
    Value fallback = dflt != nullptr ? *dflt : Value(0);
    if (in.is_int() || in.is_bool()) return Value(in.as_int());
    if (in.is_float()) {
      double d = in.as_double();
      if (!std::isfinite(d) || std::fabs(d) > 9.2e18) return fallback;
      return Value(int64_t(d));
    }
    if (in.is_string()) {
      std::string s = Strip(in.as_string(), nullptr, true, true);
      char* end = nullptr;
      errno = 0;
      long long v = std::strtoll(s.c_str(), &end, 10);
      if (!s.empty() && *end == '\0' && errno == 0) return Value(int64_t(v));
      double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && *end == '\0' && std::isfinite(d) && std::fabs(d) < 9.2e18) {
        return Value(int64_t(d));
      }
    }
    return fallback;
  }
  if (name == "float") {
    const Value* dflt = GetArg(a, 0, "default");
    Value fallback = dflt != nullptr ? *dflt : Value(0.0);
    if (in.is_number()) return Value(in.as_double());
    if (in.is_string()) {
      std::string s = Strip(in.as_string(), nullptr, true, true);
      char* end = nullptr;
      double d = std::strtod(s.c_str(), &end);
      if (!s.empty() && *end == '\0') return Value(d);
    }
    return fallback;
  }
  if (name == "abs") {
    if (in.is_float()) return Value(std::fabs(in.as_double()));
    if (in.is_number()) return Value(in.as_int() < 0 ? -in.as_int() : in.as_int());
    return absl::InvalidArgumentError(
        Cat("bad operand type for abs(): '", in.TypeName(), "'"));
  }
  if (name == "list") {
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    return Value(std::move(*items));
  }
  if (name == "items") {
    if (in.is_undefined()) return Value(List());
    if (!in.is_dict()) {
      return absl::InvalidArgumentError(
          Cat("items filter: expected a mapping, got ", in.TypeName()));
    }
    List out;
    for (const auto& [k, v] : in.as_dict()) out.push_back(Value::Tuple({Value(k), v}));
    return Value(std::move(out));
  }
  if (name == "dictsort") {
    if (!in.is_dict()) return absl::InvalidArgumentError("dictsort needs a mapping");
    Dict d = in.as_dict();
    std::stable_sort(d.begin(), d.end(), [](const auto& x, const auto& y) {
      return AsciiCase(x.first, false) < AsciiCase(y.first, false);
    });
    List out;
    for (auto& [k, v] : d) out.push_back(Value::Tuple({Value(k), v}));
    return Value(std::move(out));
  }
  if (name == "first" || name == "last") {
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    if (items->empty()) return Value::Undefined(Cat("No ", name, " item"));
    return name == "first" ? items->front() : items->back();
  }
  if (name == "reverse") {
    if (in.is_string()) {
      std::vector<uint32_t> cps = DecodeUtf8(in.as_string());
      std::reverse(cps.begin(), cps.end());
      return Value(EncodeUtf8(cps, 0, cps.size()));
    }
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    std::reverse(items->begin(), items->end());
    return Value(std::move(*items));
  }
  if (name == "join") {
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    const Value* sep = GetArg(a, 0, "d");
    const Value* attr = GetArg(a, 1, "attribute");
    std::string d = sep != nullptr ? sep->Str() : "";
    std::string out;
    for (size_t i = 0; i < items->size(); ++i) {
      if (i > 0) out += d;
      out += (attr != nullptr ? GetAttrPath((*items)[i], attr->Str()) : (*items)[i]).Str();
      if (out.size() > max_size) return absl::ResourceExhaustedError("string too large");
    }
    return Value(std::move(out));
  }
  if (name == "unique") {
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    List out;
    for (const Value& v : *items) {
      bool seen = false;
      for (const Value& o : out) {
        seen = seen || (v.is_string() && o.is_string()
                            ? AsciiCase(v.as_string(), false) == AsciiCase(o.as_string(), false)
                            : v.Equals(o));
      }
      if (!seen) out.push_back(v);
    }
    return Value(std::move(out));
  }
  if (name == "sum" || name == "min" || name == "max") {
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    const Value* attr = GetArg(a, name == "sum" ? 0 : 1, "attribute");
    if (name == "sum") {
      const Value* start = GetArg(a, 1, "start");
      Value acc = start != nullptr ? *start : Value(0);
      for (const Value& v0 : *items) {
        Value v = attr != nullptr ? GetAttrPath(v0, attr->Str()) : v0;
        if (!v.is_number() || !acc.is_number()) {
          return absl::InvalidArgumentError("sum() needs numbers");
        }
        acc = (v.is_float() || acc.is_float()) ? Value(acc.as_double() + v.as_double())
                                               : Value(acc.as_int() + v.as_int());
      }
      return acc;
    }
    if (items->empty()) return Value::Undefined("No aggregated item, sequence was empty.");
    Value best = (*items)[0];
    for (const Value& v : *items) {
      auto r = name == "min" ? Less(v, best) : Less(best, v);
      if (!r.ok()) return r.status();
      if (*r) best = v;
    }
    return best;
  }
  if (name == "wordcount") return Value(int64_t(Split(in.Str(), nullptr, -1).size()));
  if (name == "select" || name == "reject" || name == "selectattr" ||
      name == "rejectattr") {
    return SelectFilter(name, in, a);
  }
  if (name == "sort") return SortFilter(in, a);
  if (name == "map") {
    auto items = Iterate(in);
    if (!items.ok()) return items.status();
    List out;
    const Value* attr = nullptr;
    const Value* dflt = nullptr;
    for (const auto& [k, v] : a.kw) {
      if (k == "attribute") attr = &v;
      if (k == "default") dflt = &v;
    }
    if (attr != nullptr) {
      for (const Value& v : *items) {
        Value x = GetAttrPath(v, attr->Str());
        out.push_back(x.is_undefined() && dflt != nullptr ? *dflt : x);
      }
      return Value(std::move(out));
    }
    if (a.pos.empty() || !a.pos[0].is_string() || !IsKnownFilter(a.pos[0].as_string())) {
      return absl::InvalidArgumentError("map() needs attribute= or a known filter name");
    }
    CallArgs rest;
    rest.pos.assign(a.pos.begin() + 1, a.pos.end());
    rest.kw = a.kw;
    for (const Value& v : *items) {
      auto r = ApplyFilter(a.pos[0].as_string(), v, rest, max_size);
      if (!r.ok()) return r.status();
      out.push_back(std::move(*r));
    }
    return Value(std::move(out));
  }
  return absl::UnimplementedError(Cat("no filter named '", name, "'"));
}

absl::StatusOr<Value> CallMethod(const Value& obj, std::string_view name,
                                 const CallArgs& a, bool* found) {
  *found = true;
  if (obj.is_string()) {
    const std::string& s = obj.as_string();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      return Value(Strip(s, GetArg(a, 0, "chars"), name != "rstrip", name != "lstrip"));
    }
    if (name == "upper" || name == "lower") return Value(AsciiCase(s, name == "upper"));
    if (name == "title") return Value(Title(s));
    if (name == "capitalize") return ApplyFilter("capitalize", obj, {}, s.size());
    if (name == "split" || name == "rsplit") {
      if (name == "rsplit" && a.pos.size() + a.kw.size() > 1) {
        return absl::UnimplementedError("rsplit with maxsplit is not supported");
      }
      auto maxsplit = IntArg(GetArg(a, 1, "maxsplit"), -1, "split maxsplit");
      if (!maxsplit.ok()) return maxsplit.status();
      const Value* sep = GetArg(a, 0, "sep");
      if (sep != nullptr && !sep->is_none() &&
          (!sep->is_string() || sep->as_string().empty())) {
        return absl::InvalidArgumentError("split(): empty or non-string separator");
      }
      return Value(Split(s, sep, *maxsplit));
    }
    if (name == "startswith" || name == "endswith") {
      const Value* p = GetArg(a, 0, "prefix");
      if (p == nullptr) return absl::InvalidArgumentError(Cat(name, "() needs an argument"));
      List options = p->is_list() ? p->as_list() : List{*p};
      for (const Value& o : options) {
        if (!o.is_string()) return absl::InvalidArgumentError(Cat(name, "() needs strings"));
        const std::string& t = o.as_string();
        bool hit = t.size() <= s.size() &&
                   (name == "startswith" ? s.compare(0, t.size(), t) == 0
                                         : s.compare(s.size() - t.size(), t.size(), t) == 0);
        if (hit) return Value(true);
      }
      return Value(false);
    }
    if (name == "replace") return ApplyFilter("replace", obj, a, size_t{1} << 30);
    if (name == "find" || name == "count") {
      const Value* sub = GetArg(a, 0, "sub");
      if (sub == nullptr || !sub->is_string()) {
        return absl::InvalidArgumentError(Cat(name, "() needs a string"));
      }
      if (name == "count") {
        if (sub->as_string().empty()) return Value(int64_t(DecodeUtf8(s).size() + 1));
        int64_t n = 0;
        for (size_t p = s.find(sub->as_string()); p != std::string::npos;
             p = s.find(sub->as_string(), p + sub->as_string().size())) {
          ++n;
        }
        return Value(n);
      }
      size_t p = s.find(sub->as_string());
      if (p == std::string::npos) return Value(-1);
      return Value(int64_t(DecodeUtf8(s.substr(0, p)).size()));
    }
    if (name == "isspace" || name == "isdigit" || name == "isalpha" || name == "isupper" ||
        name == "islower") {
      std::vector<uint32_t> cps = DecodeUtf8(s);
      if (cps.empty()) return Value(false);
      bool any_cased = false;
      for (uint32_t c : cps) {
        bool ok = name == "isspace" ? PySpace(c)
                  : name == "isdigit" ? (c >= '0' && c <= '9')
                  : name == "isalpha" ? (c < 128 && std::isalpha(int(c)))
                  : name == "isupper" ? !(c < 128 && std::islower(int(c)))
                                      : !(c < 128 && std::isupper(int(c)));
        if (c < 128 && std::isalpha(int(c))) any_cased = true;
        if (!ok) return Value(false);
      }
      if (name == "isupper" || name == "islower") return Value(any_cased);
      return Value(true);
    }
    if (name == "join") {
      const Value* items = GetArg(a, 0, "iterable");
      if (items == nullptr) return absl::InvalidArgumentError("join() needs an argument");
      CallArgs ja;
      ja.pos.push_back(obj);
      return ApplyFilter("join", *items, ja, size_t{1} << 30);
    }
  } else if (obj.is_dict()) {
    const Dict& d = obj.as_dict();
    if (name == "items") {
      List out;
      for (const auto& [k, v] : d) out.push_back(Value::Tuple({Value(k), v}));
      return Value(std::move(out));
    }
    if (name == "keys" || name == "values") {
      List out;
      for (const auto& [k, v] : d) out.push_back(name == "keys" ? Value(k) : v);
      return Value(std::move(out));
    }
    if (name == "get") {
      const Value* key = GetArg(a, 0, "key");
      const Value* dflt = GetArg(a, 1, "default");
      if (key == nullptr) return absl::InvalidArgumentError("get() needs a key");
      const Value* f = key->is_string() ? obj.Find(key->as_string()) : nullptr;
      if (f != nullptr) return *f;
      return dflt != nullptr ? *dflt : Value::None();
    }
  }
  *found = false;
  return Value();
}

}  // namespace kvfold::jinja::internal
