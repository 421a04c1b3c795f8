#!/usr/bin/env python3
"""Writes tests/golden/tokenizers/regex_golden.json with the match spans that
Hugging Face tokenizers 0.20.3 (Oniguruma via the `onig` crate) finds for
pre-tokenizer patterns (reference for models/tokenizer/regex_test.cc).

Usage (from the repository root; needs `pip install tokenizers==0.20.3`):
  python3 tools/tokenizer/make_regex_golden.py

How the spans are recovered: tokenizers' Split pre-tokenizer turns the regex
matches into pieces. With behavior="removed" and invert=True only the matched
pieces remain ("matches"); with invert=False only the gaps between matches
remain ("gaps"). pre_tokenize_str reports offsets in code points (chars), not
bytes. Empty pieces are dropped by tokenizers, so empty matches are not in
"matches", but they still split gaps (e.g. a* on "bab" gives gaps [0,1],
[2,3]); the C++ test derives both lists from its own FindAll and compares.

Texts are fixed tricky strings plus seeded random strings drawn from a pool
of interesting code points (the output is deterministic).
"""
import json
import os
import random
import sys

import tokenizers
from tokenizers import Regex, pre_tokenizers

OUT = "tests/golden/tokenizers/regex_golden.json"

PATTERNS = [
    # GPT-2 / ByteLevel(use_regex=True)
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    # Llama 3
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    # Qwen2
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    # GPT-4o (o200k)
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    # DeepSeek V3
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    r"[一-龥\u3040-ゟ゠-ヿ]+",
    r"\p{N}", r"\p{N}{1,3}", r"\s+", r"[0-9]", r" ?[^(\s|[.,!?…。，、।۔،])]+",
    r"\s?[!-/:-~！-／：-～‘-‟\u3000-。]+", r"\s+$", r"^\s+", r"[\r\n]",
    r"'s|'t", r"(?i)hello|world", r"a(?i)b|c", r"(?i:ss)", r"(?i:ß)",
    r"(?i:[a-z]+)", r"(?i:k)", r"a*", r"x?", r"(?:ab)+", r"(?:a|b)*?c",
    r"\bfoo\b", r".+", r"[\p{L}\p{M}]+", r"\w+", r"\W+", r"\d+", r"\S+",
    r"[^\p{L}]", r"\p{^L}+", r"\P{N}+", r"[\u0041-\u005A]+", r"\x{1F600}",
    r"\p{Lu}\p{Ll}+", r"a{2,3}", r"a{2,}?", r"a{,2}", r"(ab|a)(c|bcd)",
    r"(?=a)\w", r"$", r"\b", r"(?=\s)", r"\s*", r"\pL", r"x{", r"a+?b",
    r"(?:\s|a)+(?!b)", r"\h+", r"\p{Letter}+\p{Nd}*",
]

FIXED_TEXTS = [
    "", "a", " ", "\n", "'", "1", "\u00e9", "\U0001f600",
    "Hello world! It's a test. They'll say we'd've done it, I'm sure.",
    "HE'S HERE, THEY'LL COME, I'D GO. 'S 'T 'RE 'VE 'M 'LL 'D",
    "it\u2019s not 's but 'ſ and 'K or '\u212a (Kelvin) 'ﬅ 'ß",
    "def f(x):\n\tif x:\n\t\treturn x  # comment\n    else:\n        pass\n",
    "line one   \r\nline two\t\t\n\n\n   \n  trailing spaces      ",
    "numbers 1234567 and 12.5e-3, ١٢٣٤٥ ¹²³ ½ Ⅻ ０１２",
    "日本語のテキストです。中文，标点、符号！",
    "مرحبا بالعالم، كيف حالك؟ ۔",
    "हिन्दी में लिखा गया पाठ। क़ ज़",
    "family: \U0001f468\u200d\U0001f469\u200d\U0001f467 thumbs \U0001f44d\U0001f3fd flag \U0001f1fa\U0001f1f8",
    "nbsp\u00a0ideo\u3000ls\u2028nel\u0085bom\ufeffzwsp\u200bend",
    "ΣΊΣΥΦΟΣ σίσυφος ς final",
    "    leading and many                                     spaces    ",
    "\r\n\r\n  \r\n\t\r", "a  b   c    d", "x" * 50 + " " * 50 + "1" * 20,
    "ß SS ss ẞ straße STRASSE", "foo foobar barfoo foo_bar (foo)",
    "aaab abab abb aaaa", "hello HELLO world WORLD HeLLo", "ab abc abcd ac",
    "caf\u00e9 cafe\u0301 na\u00efve A\u030a", "\t\t\t\t", "   \n",
    "url: https://example.com/path?q=1&r=[2] {x|y} \"quoted\" `tick`",
    "(\u2026) \u3002\uff0c\u3001 \u0964 \u06d4 \u060c text. end!",
]

POOL = (list("aZs S'tTlLdD1 9\t\n\r.,!?-_") + [
    "\u017f", "\u212a", "\u00df", "\u1e9e", "\u00e9", "\u0301", "\u0663",
    "\u00bd", "\u65e5", "\u3002", "\uff0c", "\u00a0", "\u3000", "\u2028",
    "\u0085", "\ufeff", "\u200b", "\u200d", "\U0001f600", "\U0001f3fd",
    "\u0928", "\u093f", "\u0627", "\u03c3", "\u03c2", "\u0410", "\u0964",
    "\u2026", "\u24b6", "\u2160", "\ufb05", "\U0001d400", "\x0b", "\x1c",
    "'s", "'S", "'ll", "'LL", "  ", "\r\n", "    ", "123456", "\u2019",
])


def spans(pattern, text, invert):
    split = pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=invert)
    return [list(o) for _, o in split.pre_tokenize_str(text)]


def main():
    rng = random.Random(20220623)
    texts = list(FIXED_TEXTS)
    for _ in range(160):
        n = rng.randint(1, 24)
        texts.append("".join(rng.choice(POOL) for _ in range(n)))
    results = []
    for pi, p in enumerate(PATTERNS):
        for ti, t in enumerate(texts):
            results.append([pi, ti, spans(p, t, True), spans(p, t, False)])
    data = {
        "generator": "tools/tokenizer/make_regex_golden.py",
        "tokenizers": tokenizers.__version__,
        "python": sys.version.split()[0],
        "offsets": "code points; results are [pattern, text, matches, gaps]",
        "patterns": PATTERNS,
        "texts": texts,
        "results": results,
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
