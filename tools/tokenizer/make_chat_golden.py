#!/usr/bin/env python3
"""Golden renders of Hugging Face chat templates for //models/chat tests.

Every expected string here comes from transformers itself: each template is
compiled with transformers' own `_compile_jinja_template` (the function that
`PreTrainedTokenizerBase.apply_chat_template` uses: jinja2
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
raise_exception, strftime_now, transformers' tojson) and rendered with the
same keyword arguments `apply_chat_template(..., tokenize=False)` passes:
messages, tools=None, documents=None, add_generation_prompt and the
tokenizer's special_tokens_map merged with extra kwargs.

The only change: `strftime_now` is replaced by a fixed clock (NOW_EPOCH, UTC)
so that templates reading the date (Llama 3.2) give reproducible output; the
C++ test injects the same clock.

Besides whole templates, a list of small "snippets" (language constructs
with a JSON context) is rendered the same way; jinja_test.cc checks the C++
evaluator against them.

Usage: python3 tools/tokenizer/make_chat_golden.py  (writes
tests/golden/chat_templates/golden.json; templates are the *.jinja files in
that folder, see its README.md for their sources).
"""
import datetime
import json
import os
import sys

import jinja2
import transformers
from transformers.utils.chat_template_utils import _compile_jinja_template

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DIR = os.path.join(ROOT, "tests", "golden", "chat_templates")
NOW_EPOCH = 1725364800  # 2024-09-03 12:00:00 UTC


def fixed_strftime_now(fmt):
    return datetime.datetime.fromtimestamp(NOW_EPOCH, datetime.timezone.utc).strftime(fmt)


def compile_template(source):
    tmpl = _compile_jinja_template(source)
    tmpl.globals["strftime_now"] = fixed_strftime_now
    return tmpl


LLAMA3 = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}
MISTRAL = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
QWEN = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}

# file -> (special tokens as in the model's special_tokens_map, extra kwargs sets)
TEMPLATES = {
    "meta-llama-Meta-Llama-3-8B-Instruct.jinja": (LLAMA3, [{}]),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": (LLAMA3, [{}, {"date_string": "15 Sep 2024"}]),
    "meta-llama-Llama-3.2-1B-Instruct.jinja": (LLAMA3, [{}, {"date_string": "15 Sep 2024"}]),
    "mistralai-Mistral-7B-Instruct-v0.1.jinja": (MISTRAL, [{}]),
    "mistralai-Mistral-7B-Instruct-v0.2.jinja": (MISTRAL, [{}]),
    "mistralai-Mistral-7B-Instruct-v0.3.jinja": (MISTRAL, [{}]),
    "Qwen-Qwen2-7B-Instruct.jinja": (QWEN, [{}]),
    "Qwen-Qwen2.5-7B-Instruct.jinja": (QWEN, [{}]),
}


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "user_only": [m("user", "Hello!")],
    "system_user": [m("system", "You are a helpful assistant."), m("user", "What is 2+2?")],
    "multi_turn": [
        m("user", "Hi there"),
        m("assistant", "Hello! How can I help?"),
        m("user", "Tell me a joke."),
    ],
    "system_multi_turn": [
        m("system", "Be brief."),
        m("user", "Who are you?"),
        m("assistant", "An assistant."),
        m("user", "And what do you do?"),
    ],
    "assistant_last": [m("user", "Say hi"), m("assistant", "hi")],
    "whitespace": [
        m("system", "\n  System with spaces  \n"),
        m("user", "  \n  leading and trailing whitespace \n\n"),
        m("assistant", "\tTabbed answer.\n"),
        m("user", "Line one\nLine two\r\nLine three   "),
    ],
    "unicode_quotes": [
        m("user", "Héllo wörld — 你好 🌍 \"double\" 'single' \\backslash\\ \u00a0nbsp\u3000"),
    ],
    "jinja_looking": [
        m("user", "{{ x }} {% if true %}y{% endif %} {# c #} <|eot_id|> [INST] <|im_end|>"),
    ],
    "empty_content": [m("user", "")],
    "alternation_error": [m("user", "first"), m("user", "second")],
    "unknown_role": [m("user", "q"), m("tool_result", "r")],
}

# Small templates exercising single constructs; (template, context).
SNIPPETS = [
    ("Hello {{ name }}!", {"name": "world"}),
    ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}", {}),
    ("{{ 2 * 3.0 }} {{ 1.5 + 1 }} {{ 10 / 5 }} {{ 0.1 + 0.2 }} {{ 1e3 }} {{ -0.0 }}", {}),
    ("{{ 'a' ~ 1 ~ none ~ true }} {{ 'x' * 3 }} {{ [1] + [2, 3] }}", {}),
    ("{{ [1, 'a', none, true, false, 2.5, {'k': 'v'}] }}", {}),
    ("{{ d }} {{ d.a }} {{ d['b'] }} {{ d.get('c', 'dflt') }} {{ d.get('a') }}", {"d": {"a": 1, "b": "two"}}),
    ("{{ \"it's\" }} {{ 'say \"hi\"' }} {{ 'tab\\there\\nnl' }} {{ 'back\\\\slash' }} {{ \"q\\'\" }}", {}),
    ("{{ ['it\\'s', 'plain', 'both\\'\"', 'nl\\n'] }}", {}),
    ("{% if x %}yes{% elif y %}maybe{% else %}no{% endif %}", {"x": False, "y": 1}),
    ("{% if x is defined %}d{% else %}u{% endif %}{% if x is not defined %}!{% endif %}", {}),
    ("{{ x is none }} {{ y is none }} {{ s is string }} {{ n is number }} {{ d is mapping }} "
     "{{ l is iterable }} {{ l is sequence }} {{ s is iterable }} {{ t is true }} {{ t is false }} {{ n is string }}",
     {"x": None, "y": 0, "s": "s", "n": 3, "d": {}, "l": [1], "t": True}),
    ("{% for x in l %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}/"
     "{{ loop.length }}/{{ loop.first }}/{{ loop.last }}:{{ x }} {% endfor %}", {"l": ["a", "b", "c"]}),
    ("{% for x in l %}{{ x }}{% else %}empty{% endfor %}", {"l": []}),
    ("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("{% for k, v in d|items %}{{ k }}={{ v }};{% endfor %}", {"d": {"z": 1, "a": 2}}),
    ("{% for x in l if x > 1 %}{{ x }}{{ loop.index }}{% endfor %}", {"l": [1, 2, 3]}),
    ("{% for x in l %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}",
     {"l": [1, 2, 3, 4, 5]}),
    ("{% for x in l %}{{ loop.previtem }}-{{ loop.nextitem }} {% endfor %}", {"l": [1, 2, 3]}),
    ("{% for i in range(3) %}{{ i }}{% endfor %}|{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}", {}),
    ("{% set x = 1 %}{% for i in range(3) %}{% set x = x + i %}{{ x }}{% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(x=1, s='') %}{% for i in range(3) %}{% set ns.x = ns.x + i %}"
     "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.x }} {{ ns.s }}", {}),
    ("{{ l[0] }} {{ l[-1] }} {{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ s[1:3] }} {{ s[-1] }} {{ s[::-1] }}",
     {"l": [1, 2, 3, 4], "s": "héllo"}),
    ("{{ s|length }} {{ l|length }} {{ d|length }} {{ l|count }} {{ l|first }} {{ l|last }} {{ l|join(', ') }} {{ l|join }}",
     {"s": "héllo", "l": [1, 2, 3], "d": {"a": 1}}),
    ("[{{ s|trim }}] [{{ s.strip() }}] [{{ s.lstrip() }}] [{{ s.rstrip() }}] [{{ s|upper }}] [{{ s.lower() }}]",
     {"s": " \t Mixed Case\u00a0\n"}),
    ("{{ s.split() }} {{ s.split(',') }} {{ s.startswith('a') }} {{ s.endswith('c') }} {{ s.replace(',', ';') }} "
     "{{ s|replace('a', 'A') }} {{ s.strip('a,') }}", {"s": "a,b, c"}),
    ("{{ x|default('d') }} {{ y|default('d') }} {{ z|d('e') }} {{ n|default('n', true) }} {{ n|default('n') }}",
     {"y": "set", "n": ""}),
    ("{{ v|tojson }} {{ s|tojson }} {{ v|tojson(indent=2) }}",
     {"v": {"a": [1, 2.5, None, True], "b": {"c": "é\"\n"}, "e": [], "f": {}}, "s": "<&>'"}),
    ("{{ v|tojson(indent=4) }}", {"v": [{"name": "f", "parameters": {"x": {"type": "int"}}}]}),
    ("{{ 5|string }} {{ '5'|int + 1 }} {{ 'x'|int }} {{ 3.7|int }} {{ 'ab'|list }} {{ d|list }} {{ none|string }}",
     {"d": {"k": 1}}),
    ("{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' == 'a' }} {{ 'a' != 'b' }} {{ 1 == 1.0 }} {{ [1] == [1] }} {{ d == d2 }}",
     {"d": {"a": 1}, "d2": {"a": 1}}),
    ("{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in d }} {{ 'z' not in d }} {{ not true }} {{ true and 0 }} {{ 0 or 'x' }}",
     {"d": {"k": 1}}),
    ("{{ 'yes' if c else 'no' }} {{ 'only' if c }}|", {"c": False}),
    ("{{ l|selectattr('role', 'equalto', 'user')|list|length }} {{ l|rejectattr('role', 'equalto', 'user')|map(attribute='c')|join }}"
     " {{ l|map(attribute='role')|list }}",
     {"l": [{"role": "user", "c": "1"}, {"role": "bot", "c": "2"}, {"role": "user", "c": "3"}]}),
    ("{{ l|reject('equalto', 'b')|join(',') }} {{ l|select('equalto', 'b')|list }}", {"l": ["a", "b", "c"]}),
    ("  {% if true %}\n    x\n  {% endif %}\n  y  \n{%- if true -%}\n   z   \n{%- endif %}\n", {}),
    ("a  {{- ' b ' -}}  c {#- comment -#} d\n{# own line #}\ne", {}),
    ("{% raw %}{{ not evaluated }}{% endraw %} ok", {}),
    ("{%+ if true %}kept{% endif %}\n  {%+ if true %}x{% endif %}", {}),
    ("{% macro greet(name, p='Hi') %}{{ p }} {{ name }}{% endmacro %}{{ greet('A') }} {{ greet('B', p='Yo') }}", {}),
    ("{{ raise_exception('custom failure: ' ~ x) }}", {"x": 42}),
    ("{{ undefined_var }}|{{ undefined_var|length }}|{% for x in undefined_var %}x{% endfor %}|{{ d.missing }}",
     {"d": {}}),
    ("{{ undefined_var.attr }}", {}),
    ("{{ undefined_var + 'x' }}", {}),
    ("{{ d.missing.attr }}", {"d": {}}),
    ("{{ 1 + 'a' }}", {}),
    ("{{ l[10] }}|{{ d['nope'] }}|{{ s[10] }}", {"l": [1], "d": {}, "s": "ab"}),
    ("{{ 'abc'|first }} {{ 'abc'|last }} {{ [3, 1, 2]|sort|list }} {{ ['b', 'A', 'c']|sort|join }} {{ [1, 2]|reverse|list }}", {}),
    ("{{ '%s-%d'|format('a', 3) }} {{ 'hello world'|title }} {{ 'hello'|capitalize }} {{ [1, 2, 3]|sum }}", {}),
    ("{{ x|abs }} {{ [1, 5, 2]|max }} {{ [4, 1]|min }} {{ 'a b'.title() }} {{ '  x'.isspace() }}", {"x": -3}),
    ("line1\nline2\n", {}),
    ("trailing newlines kept once\n\n", {}),
    ("{{ ns.a }}", {}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }} {% set t = (1, 'x') %}{{ t[1] }} {{ t }}", {}),
    ("{% set block_var %}inside {{ 1 + 1 }}{% endset %}[{{ block_var }}]", {}),
    ("{{ '{{' }} {{ \"}}\" }} {{ '{%' }}", {}),
    ("{{ l|items|list if false else 'x' }} {{ {'b': 1, 'a': 2}|dictsort }}", {"l": {}}),
    ("{{ messages[0]['content'] | trim + '!' }} {{ 'a' + 'b' | upper }}", {"messages": [{"content": " hi "}]}),
    ("{{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }} {{ -2 ** 2 }} {{ not 1 == 2 }} {{ 1 if 0 else 2 if 0 else 3 }}", {}),
    ("{{ 'abc'.upper()[1:] ~ ('x' ~ 'y')|upper }}", {}),
    ("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }},{% endfor %}", {}),
    ("{% for x in l %}{% for y in l %}{{ loop.index }}{{ x }}{{ y }} {% endfor %}{{ loop.index }};{% endfor %}", {"l": [1, 2]}),
    ("{{ true }} {{ True }} {{ none }} {{ None }} {{ false|string|lower }}", {}),
    ("{{ l|unique|list }} {{ 'a-b-c'.split('-', 1) }} {{ 'Hello'.find('l') }} {{ 'x'.center(5) }}|", {"l": [1, 1, 2]}),
    ("{{ x.y.z }}", {"x": {"y": {"z": "deep"}}}),
    ("{% if foo %}{% endfor %}", {}),
    ("{{ 1 + }}", {}),
    ("{% if true %}unclosed", {}),
    ("{{ x|nosuchfilter }}", {"x": 1}),
    ("{{ x is nosuchtest }}", {"x": 1}),
    ("{% nosuchtag %}", {}),
    ("{{ 'unterminated }}", {}),
]


def render(tmpl, kwargs):
    try:
        return {"output": tmpl.render(**kwargs)}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": str(e), "error_type": "TemplateSyntaxError"}
    except jinja2.exceptions.TemplateError as e:
        return {"error": str(e), "error_type": type(e).__name__}
    except Exception as e:  # TypeError, ZeroDivisionError, ...
        return {"error": str(e), "error_type": type(e).__name__}


def main():
    out = {
        "generator": "tools/tokenizer/make_chat_golden.py",
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "now_epoch_utc": NOW_EPOCH,
        "templates": [],
        "snippets": [],
    }
    for fname, (special, extras) in TEMPLATES.items():
        with open(os.path.join(DIR, fname), encoding="utf-8", newline="") as f:
            source = f.read()
        tmpl = compile_template(source)
        cases = []
        for extra in extras:
            for conv_name, conv in CONVERSATIONS.items():
                for agp in (False, True):
                    kwargs = {**special, **extra}
                    res = render(tmpl, dict(messages=conv, tools=None, documents=None,
                                            add_generation_prompt=agp, **kwargs))
                    cases.append({"conversation": conv_name, "add_generation_prompt": agp,
                                  "variables": kwargs, **res})
        out["templates"].append({"file": fname, "cases": cases})
    out["conversations"] = CONVERSATIONS
    for source, ctx in SNIPPETS:
        try:
            tmpl = compile_template(source)
        except jinja2.exceptions.TemplateSyntaxError as e:
            out["snippets"].append({"template": source, "context": ctx, "error": str(e),
                                    "error_type": "TemplateSyntaxError"})
            continue
        out["snippets"].append({"template": source, "context": ctx, **render(tmpl, ctx)})
    path = os.path.join(DIR, "golden.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(t["cases"]) for t in out["templates"])
    print(f"wrote {path}: {n} template cases, {len(out['snippets'])} snippets", file=sys.stderr)


if __name__ == "__main__":
    main()
