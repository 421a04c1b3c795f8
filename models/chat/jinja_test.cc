// Evaluator tests. Snippet expectations come from jinja2 itself
// (tests/golden/chat_templates/golden.json, "snippets", rendered by
// tools/tokenizer/make_chat_golden.py in transformers' environment); the
// hand-written cases below check limits and error reporting.
#include "models/chat/jinja.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace kvfold::jinja {
namespace {

Value FromJson(const nlohmann::ordered_json& j) {
  if (j.is_null()) return Value::None();
  if (j.is_boolean()) return Value(j.get<bool>());
  if (j.is_number_integer()) return Value(j.get<int64_t>());
  if (j.is_number()) return Value(j.get<double>());
  if (j.is_string()) return Value(j.get<std::string>());
  if (j.is_array()) {
    List l;
    for (const auto& x : j) l.push_back(FromJson(x));
    return Value(std::move(l));
  }
  Dict d;
  for (auto it = j.begin(); it != j.end(); ++it) {
    d.emplace_back(it.key(), FromJson(it.value()));
  }
  return Value(std::move(d));
}

nlohmann::ordered_json ReadGolden() {
  std::ifstream in("tests/golden/chat_templates/golden.json");
  EXPECT_TRUE(in.good());
  return nlohmann::ordered_json::parse(in);
}

absl::StatusOr<std::string> RenderText(std::string_view source,
                                       const Dict& root = {},
                                       const RenderOptions& opts = {}) {
  auto t = Template::Parse(source, "t");
  if (!t.ok()) return t.status();
  return t->Render(root, opts);
}

// Snippets whose construct this evaluator deliberately does not implement:
// they must fail with a clear error instead of rendering something else.
const std::set<std::string>& Unsupported() {
  static const auto* s = new std::set<std::string>{
      "{{ '%s-%d'|format('a', 3) }} {{ 'hello world'|title }} {{ "
      "'hello'|capitalize }} {{ [1, 2, 3]|sum }}",
      "{{ l|unique|list }} {{ 'a-b-c'.split('-', 1) }} {{ 'Hello'.find('l') "
      "}} {{ 'x'.center(5) }}|",
  };
  return *s;
}

TEST(JinjaGoldenTest, SnippetsMatchJinja2) {
  nlohmann::ordered_json golden = ReadGolden();
  ASSERT_GT(golden["snippets"].size(), 50u);
  int checked = 0;
  for (const auto& s : golden["snippets"]) {
    const std::string source = s["template"].get<std::string>();
    SCOPED_TRACE(source);
    Value ctx = FromJson(s["context"]);
    auto t = Template::Parse(source, "snippet");
    absl::StatusOr<std::string> got =
        t.ok() ? t->Render(ctx.as_dict()) : absl::StatusOr<std::string>(t.status());
    if (Unsupported().count(source)) {
      EXPECT_FALSE(got.ok()) << *got;
      continue;
    }
    if (s.contains("output")) {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, s["output"].get<std::string>());
    } else {
      ASSERT_FALSE(got.ok()) << "jinja2 raised " << s["error"] << " but got "
                             << *got;
      if (s["error_type"] == "TemplateError") {  // raise_exception
        EXPECT_EQ(got.status().message(), s["error"].get<std::string>());
      }
      if (s["error_type"] == "UndefinedError") {
        EXPECT_NE(got.status().message().find(s["error"].get<std::string>()),
                  std::string::npos)
            << got.status();
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(JinjaTest, ValueBasics) {
  EXPECT_EQ(Value(List{Value(1), Value("a"), Value::None()}).Repr(),
            "[1, 'a', None]");
  EXPECT_EQ(Value::Tuple({Value(1)}).Repr(), "(1,)");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(1.5e-5), "1.5e-05");
  EXPECT_EQ(PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PythonFloatRepr(123456.0), "123456.0");
  EXPECT_FALSE(Value().Truthy());
  EXPECT_TRUE(Value(1).Equals(Value(1.0)));
  EXPECT_EQ(*ToJson(Value(Dict{{"a", Value(List{})}})), "{\"a\": []}");
}

TEST(JinjaTest, RootVariablesAndUndefined) {
  EXPECT_EQ(*RenderText("{{ a }}-{{ b }}", {{"a", Value("x")}}), "x-");
  EXPECT_EQ(*RenderText("{{ m.role }}", {{"m", Value(Dict{{"role", Value("user")}})}}),
            "user");
}

TEST(JinjaTest, ErrorsNameLineAndColumn) {
  auto st = RenderText("line1\n  {{ x|nosuch }}").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("t:2:8"), std::string::npos) << st;
  EXPECT_NE(st.message().find("nosuch"), std::string::npos) << st;
  st = RenderText("{% if a %}\n{% for x in y %}").status();
  EXPECT_NE(st.message().find("'for' block is not closed"), std::string::npos) << st;
  st = RenderText("{% include 'x' %}").status();
  EXPECT_NE(st.message().find("'include'"), std::string::npos) << st;
  st = RenderText("{{ a }").status();
  EXPECT_FALSE(st.ok());
  st = RenderText("{{ x is prime }}").status();
  EXPECT_NE(st.message().find("no test named 'prime'"), std::string::npos) << st;
  st = RenderText("\n\n  {{ 'a'.nomethod() }}").status();
  EXPECT_NE(st.message().find("t:3:"), std::string::npos) << st;
  st = RenderText("{{ raise_exception('boom') }}").status();
  EXPECT_EQ(st.message(), "boom");
}

TEST(JinjaTest, DeepNestingIsAnErrorNotACrash) {
  std::string deep_expr = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_FALSE(RenderText("{{ " + deep_expr + " }}").ok());
  std::string deep_not;
  for (int i = 0; i < 5000; ++i) deep_not += "not ";
  EXPECT_FALSE(RenderText("{{ " + deep_not + "x }}").ok());
  std::string deep_list = std::string(5000, '[') + std::string(5000, ']');
  EXPECT_FALSE(RenderText("{{ " + deep_list + " }}").ok());
  std::string deep_blocks;
  for (int i = 0; i < 5000; ++i) deep_blocks += "{% if true %}";
  for (int i = 0; i < 5000; ++i) deep_blocks += "{% endif %}";
  EXPECT_FALSE(RenderText(deep_blocks).ok());
  std::string long_chain = "{{ 1";
  for (int i = 0; i < 100000; ++i) long_chain += " + 1";
  EXPECT_FALSE(RenderText(long_chain + " }}").ok());
  std::string filters = "{{ 'a'";
  for (int i = 0; i < 100000; ++i) filters += "|trim";
  EXPECT_FALSE(RenderText(filters + " }}").ok());
  // Recursion through macros is bounded too.
  EXPECT_FALSE(
      RenderText("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}").ok());
}

TEST(JinjaTest, LoopAndOutputLimits) {
  RenderOptions opts;
  opts.max_loop_iterations = 1000;
  auto st = RenderText("{% for i in range(10) %}{% for j in range(10) %}"
                       "{% for k in range(11) %}{% endfor %}{% endfor %}{% endfor %}",
                       {}, opts)
                .status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("loop iterations"), std::string::npos) << st;
  opts = RenderOptions();
  opts.max_output_bytes = 100;
  st = RenderText("{% for i in range(50) %}abc{% endfor %}", {}, opts).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  st = RenderText("{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
                  "{% set ns.s = ns.s + ns.s %}{% endfor %}",
                  {}, opts)
           .status();
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(RenderText("{{ 'x' * 1000000000000 }}").ok());
}

TEST(JinjaTest, StrftimeNowUsesInjectedClock) {
  RenderOptions opts;
  opts.strftime_now = [](const std::string& f) { return "fmt=" + f; };
  EXPECT_EQ(*RenderText("{{ strftime_now('%d %b %Y') }}", {}, opts),
            "fmt=%d %b %Y");
  // The default clock formats a real date.
  EXPECT_EQ(RenderText("{{ strftime_now('%Y')|length }}").value(), "4");
}

TEST(JinjaTest, TemplateIsReusableAndCopyable) {
  auto t = Template::Parse("{% set x = 1 %}{{ x }}{{ y }}", "t");
  ASSERT_TRUE(t.ok());
  Template copy = *t;
  EXPECT_EQ(*t->Render({{"y", Value(2)}}), "12");
  EXPECT_EQ(*copy.Render({{"y", Value(3)}}), "13");
}

}  // namespace
}  // namespace kvfold::jinja
