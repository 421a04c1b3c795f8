#!/usr/bin/env python3
"""Generate the tokenizer golden fixtures under tests/golden/tokenizers/.

The C++ tokenizer.json reimplementation (encode and decode) is tested against
records produced here by the reference implementation, Hugging Face
`tokenizers` 0.20.3 (pinned in tools/tokenizer/requirements.txt).

For each fixture tokenizer NAME this writes tests/golden/tokenizers/NAME/:

  tokenizer.json         a small BPE tokenizer (vocab 2000-4000) trained here with
                         `tokenizers` on text that ships with this machine, then
                         assembled (normalizer, pre-tokenizer, post-processor,
                         decoder, added tokens, vocab layout) the way the real
                         model family's tokenizer.json is, and saved from
                         `tokenizers`' own serialization (Tokenizer.to_str);
                         merges are "a b" strings in LEGACY_MERGES fixtures
                         (as in the older Hub files) and [a, b] pairs (what
                         0.20 writes) in the others.
  tokenizer_config.json  a realistic transformers config for that family
                         (no chat_template).
  golden.json            {"generator", "tokenizers_version", "name",
                          "encode": [{"text", "add_special_tokens", "ids", "tokens",
                                      "decoded", "decoded_skip_special"}...],
                          "decode": [{"ids", "skip_special_tokens", "text"}...]}
                         produced by loading the FINAL tokenizer.json with
                         tokenizers.Tokenizer.from_file.

Fixtures (see tools/tokenizer/README.md for details):
  gpt2_bytelevel, llama3_bytelevel, qwen2_bytelevel, smollm_bytelevel,
  llama2_sentencepiece, mistral_sentencepiece

Training data: a fixed list of files (TRAINING_FILES below): Debian's
/usr/share/common-licenses, the Python 3.11 standard library, libstdc++ 12
headers, and the translations in a fixed set of gettext catalogs
(/usr/share/locale/<lang>/LC_MESSAGES/*.mo: zh_CN, ja, ko, ru, de, fr, es, vi,
hi, ar, he) for CJK/Cyrillic/accented/Devanagari/Arabic/Hebrew merges.
The script prints the SHA-256 of the assembled training text; regenerating on a
machine where that hash differs gives different (but equally valid) vocabularies.
Training is deterministic for a given training text (BpeTrainer breaks count
ties by token id; limit_alphabet is chosen where there is no count tie).

Usage:
  python3 tools/tokenizer/make_tokenizer_fixtures.py [--out tests/golden/tokenizers] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import gettext
import hashlib
import json
import os
import random
import sys
import sysconfig
from collections import Counter

import tokenizers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, normalizers

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "tests", "golden", "tokenizers")
GENERATOR = "tools/tokenizer/make_tokenizer_fixtures.py"
EXPECTED_TOKENIZERS_VERSION = "0.20.3"

# --------------------------------------------------------------------------
# Training / benchmark text: a fixed, ordered list of files on this machine.
# --------------------------------------------------------------------------

def _stdlib() -> str:
    return sysconfig.get_paths()["stdlib"]  # .../lib/python3.11


LICENSE_FILES = [
    "/usr/share/common-licenses/Apache-2.0",
    "/usr/share/common-licenses/GPL-3",
    "/usr/share/common-licenses/LGPL-2.1",
    "/usr/share/common-licenses/MPL-2.0",
    "/usr/share/common-licenses/Artistic",
    "/usr/share/common-licenses/GFDL-1.3",
]
STDLIB_FILES = [  # relative to the Python 3.11 stdlib directory
    "argparse.py", "typing.py", "dataclasses.py", "enum.py", "functools.py",
    "inspect.py", "pathlib.py", "subprocess.py", "textwrap.py", "difflib.py",
    "json/decoder.py", "json/encoder.py", "collections/__init__.py",
    "unittest/case.py", "asyncio/base_events.py", "email/_header_value_parser.py",
    "idlelib/NEWS.txt", "idlelib/README.txt",
    "test/cjkencodings/gb18030-utf8.txt", "test/cjkencodings/big5-utf8.txt",
    "test/cjkencodings/shift_jis-utf8.txt", "test/cjkencodings/euc_kr-utf8.txt",
    "test/cjkencodings/euc_jisx0213-utf8.txt",
]
CXX_FILES = [
    "/usr/include/c++/12/bits/stl_vector.h",
    "/usr/include/c++/12/bits/stl_algo.h",
    "/usr/include/c++/12/bits/unordered_map.h",
    "/usr/include/c++/12/bits/shared_ptr_base.h",
]
MO_LANGS = ["zh_CN", "ja", "ko", "ru", "de", "fr", "es", "vi", "hi", "ar", "he"]
MO_DOMAINS = ["gtk20", "glib20"]


def _read_text(path: str) -> str:
    with open(path, "r", encoding="utf-8", newline="") as f:
        return f.read()


def _read_mo(path: str) -> str:
    """All translations (msgstr) of a gettext catalog, ordered by msgid."""
    with open(path, "rb") as f:
        cat = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 (stdlib parser)
    out = []
    for key in sorted(cat, key=lambda k: (k if isinstance(k, str) else k[0], str(k))):
        msgid = key if isinstance(key, str) else key[0]
        if msgid == "":
            continue  # header
        out.append(cat[key])
    return "\n".join(out) + "\n"


def corpus_documents() -> list[tuple[str, str]]:
    """The fixed training / benchmark documents as (path, text), in order."""
    docs = []
    for p in LICENSE_FILES:
        docs.append((p, _read_text(p)))
    std = _stdlib()
    for rel in STDLIB_FILES:
        p = os.path.join(std, rel)
        docs.append((p, _read_text(p)))
    for p in CXX_FILES:
        docs.append((p, _read_text(p)))
    for lang in MO_LANGS:
        for dom in MO_DOMAINS:
            p = f"/usr/share/locale/{lang}/LC_MESSAGES/{dom}.mo"
            if os.path.exists(p):
                docs.append((p, _read_mo(p)))
    return docs


def corpus_sha256(docs) -> str:
    h = hashlib.sha256()
    for path, text in docs:
        h.update(path.encode() + b"\0" + text.encode("utf-8") + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------
# JSON building blocks (exactly as tokenizers 0.20 serializes them).
# --------------------------------------------------------------------------

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPIECE = "\u2581"  # ▁


def added(id_, content, special=True, normalized=False, lstrip=False, rstrip=False, single_word=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": normalized, "special": special}


def bytelevel(add_prefix_space, trim_offsets, use_regex):
    return {"type": "ByteLevel", "add_prefix_space": add_prefix_space,
            "trim_offsets": trim_offsets, "use_regex": use_regex}


def split_regex(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}


def template(bos, bos_id):
    return {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": bos, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }


SP_DECODER = {"type": "Sequence", "decoders": [
    {"type": "Replace", "pattern": {"String": SPIECE}, "content": " "},
    {"type": "ByteFallback"},
    {"type": "Fuse"},
    {"type": "Strip", "content": " ", "start": 1, "stop": 0},
]}


def bpe_model(vocab, merges, unk=None, fuse_unk=False, byte_fallback=False, ignore_merges=False,
              prefix=None, suffix=None):
    return {"type": "BPE", "dropout": None, "unk_token": unk, "continuing_subword_prefix": prefix,
            "end_of_word_suffix": suffix, "fuse_unk": fuse_unk, "byte_fallback": byte_fallback,
            "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}


def tokenizer_json(added_tokens, normalizer, pre_tokenizer, post_processor, decoder, model):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor, "decoder": decoder, "model": model}


# --------------------------------------------------------------------------
# Training.
# --------------------------------------------------------------------------

def train_bytelevel(docs, vocab_size, pre_tokenizer_json, normalizer_json=None, special_tokens=()):
    """ByteLevel BPE: returns (vocab dict, merges list) in trained id order."""
    tok = Tokenizer(models.BPE())
    d = json.loads(tok.to_str())
    d["pre_tokenizer"] = pre_tokenizer_json
    d["normalizer"] = normalizer_json
    tok = Tokenizer.from_str(json.dumps(d))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t for _, t in docs], trainer=trainer)
    m = json.loads(tok.to_str())["model"]
    return m["vocab"], m["merges"]


def sp_training_lines(docs):
    """SentencePiece-style training sequences: one per non-empty line (newlines are
    never inside a piece, so they are byte-fallback <0x0A> like in the real Llama)."""
    lines = []
    for _, text in docs:
        for line in text.split("\n"):
            line = line.rstrip("\r")
            if line.strip():
                lines.append(line)
    return lines


def pick_limit_alphabet(lines, target):
    """A limit near `target` where the char counts do not tie across the cutoff
    (BpeTrainer sorts by count with an unstable sort over a hash map)."""
    counts = Counter()
    for line in lines:
        counts.update(SPIECE + line.replace(" ", SPIECE))
    c = sorted(counts.values(), reverse=True)
    if len(c) <= target:
        return None
    for lim in range(target, len(c)):
        if c[lim - 1] > c[lim]:
            return lim
    return None


def train_sentencepiece_bpe(docs, vocab_size, special_tokens, alphabet_target=400):
    """SentencePiece-like BPE (pieces '▁word', byte fallback). Returns
    (pieces, merges): pieces in trained order without the special tokens."""
    lines = sp_training_lines(docs)
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always", split=True)
    limit = pick_limit_alphabet(lines, alphabet_target)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  special_tokens=list(special_tokens), limit_alphabet=limit)
    tok.train_from_iterator(lines, trainer=trainer)
    m = json.loads(tok.to_str())["model"]
    pieces = [p for p, _ in sorted(m["vocab"].items(), key=lambda kv: kv[1]) if p not in special_tokens]
    return pieces, m["merges"]


BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]


# --------------------------------------------------------------------------
# The fixture tokenizers.
# --------------------------------------------------------------------------

def build_gpt2(docs):
    """GPT-2: ByteLevel everything, <|endoftext|> last id (also in the model vocab,
    normalized=true as in openai-community/gpt2's tokenizer.json)."""
    vocab, merges = train_bytelevel(docs, 3000, bytelevel(False, True, True))
    eot = len(vocab)
    vocab["<|endoftext|>"] = eot
    j = tokenizer_json(
        [added(eot, "<|endoftext|>", normalized=True)], None, bytelevel(False, True, True),
        bytelevel(True, False, True), bytelevel(True, True, True),
        bpe_model(vocab, merges, prefix="", suffix=""))
    cfg = {"add_bos_token": False, "add_prefix_space": False, "bos_token": "<|endoftext|>",
           "clean_up_tokenization_spaces": True, "eos_token": "<|endoftext|>", "errors": "replace",
           "model_max_length": 1024, "pad_token": None, "tokenizer_class": "GPT2Tokenizer",
           "unk_token": "<|endoftext|>"}
    return j, cfg


LLAMA3_EXTRA_VOCAB = ["\u0120kvfold", "\u0120inference"]  # vocab-only (no merge): ignore_merges path


def build_llama3(docs):
    """Llama 3.1 layout: specials only in added_tokens (ids after the model vocab),
    ignore_merges=true, Split(regex)+ByteLevel(use_regex=false), no normalizer."""
    pre = {"type": "Sequence", "pretokenizers": [split_regex(LLAMA3_PATTERN), bytelevel(False, True, False)]}
    vocab, merges = train_bytelevel(docs, 4000, pre)
    for t in LLAMA3_EXTRA_VOCAB:
        if t not in vocab:
            vocab[t] = len(vocab)
    base = len(vocab)
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
             "<|reserved_special_token_1|>", "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>",
             "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"]
    names += [f"<|reserved_special_token_{i}|>" for i in range(3, 8)]
    toks = [added(base + i, n) for i, n in enumerate(names)]
    post = {"type": "Sequence", "processors": [bytelevel(True, False, True), template("<|begin_of_text|>", base)]}
    j = tokenizer_json(toks, None, pre, post, bytelevel(True, True, True),
                       bpe_model(vocab, merges, ignore_merges=True))
    cfg = {"bos_token": "<|begin_of_text|>", "clean_up_tokenization_spaces": True,
           "eos_token": "<|end_of_text|>", "model_input_names": ["input_ids", "attention_mask"],
           "model_max_length": 131072, "tokenizer_class": "PreTrainedTokenizerFast"}
    return j, cfg


def build_qwen2(docs):
    """Qwen2/2.5: NFC normalizer, Split(regex, single digits)+ByteLevel, ByteLevel
    post-processor (no BOS). Added: 3 specials + Qwen2.5's non-special <tool_call>."""
    pre = {"type": "Sequence", "pretokenizers": [split_regex(QWEN2_PATTERN), bytelevel(False, False, False)]}
    vocab, merges = train_bytelevel(docs, 3000, pre, normalizer_json={"type": "NFC"})
    base = len(vocab)
    toks = [added(base, "<|endoftext|>"), added(base + 1, "<|im_start|>"), added(base + 2, "<|im_end|>"),
            added(base + 3, "<tool_call>", special=False), added(base + 4, "</tool_call>", special=False)]
    j = tokenizer_json(toks, {"type": "NFC"}, pre, bytelevel(False, False, False),
                       bytelevel(False, False, False), bpe_model(vocab, merges, prefix="", suffix=""))
    cfg = {"add_prefix_space": False, "bos_token": None, "clean_up_tokenization_spaces": False,
           "eos_token": "<|endoftext|>", "errors": "replace", "model_max_length": 32768,
           "pad_token": "<|endoftext|>", "split_special_tokens": False,
           "tokenizer_class": "Qwen2Tokenizer", "unk_token": None}
    return j, cfg


SMOLLM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>",
                   "<file_sep>", "<filename>", "<gh_stars>", "<issue_start>", "<issue_comment>",
                   "<issue_closed>", "<jupyter_start>", "<jupyter_text>", "<jupyter_code>",
                   "<jupyter_output>", "<jupyter_script>", "<empty_output>"]


def build_smollm(docs):
    """SmolLM (StarCoder-style): specials at ids 0..16 inside the model vocab,
    Digits(individual_digits) + ByteLevel(use_regex=true)."""
    pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                 bytelevel(False, True, True)]}
    vocab, merges = train_bytelevel(docs, 2000, pre, special_tokens=SMOLLM_SPECIALS)
    toks = [added(vocab[s], s) for s in SMOLLM_SPECIALS]
    j = tokenizer_json(toks, None, pre, bytelevel(True, False, True), bytelevel(True, True, True),
                       bpe_model(vocab, merges, prefix=None, suffix=None))
    cfg = {"add_prefix_space": False, "bos_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
           "eos_token": "<|endoftext|>", "model_max_length": 2048, "tokenizer_class": "GPT2Tokenizer",
           "unk_token": "<|endoftext|>", "vocab_size": 2000}
    return j, cfg


def sp_vocab(specials, pieces):
    vocab = {}
    for t in specials + BYTE_TOKENS + pieces:
        if t not in vocab:
            vocab[t] = len(vocab)
    return vocab


def build_llama2(docs):
    """Llama 2 / TinyLlama tokenizer.json: <unk>,<s>,</s>, <0x00>..<0xFF> (3..258),
    pieces; normalizer Prepend+Replace, no pre-tokenizer, byte fallback."""
    specials = ["<unk>", "<s>", "</s>"]
    pieces, merges = train_sentencepiece_bpe(docs, 3000 - 256, specials)
    vocab = sp_vocab(specials, pieces)
    toks = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
    norm = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPIECE},
                                                {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}]}
    j = tokenizer_json(toks, norm, None, template("<s>", 1), SP_DECODER,
                       bpe_model(vocab, merges, unk="<unk>", fuse_unk=True, byte_fallback=True))
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
           "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
           "model_max_length": 2048, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
           "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>", "use_default_system_prompt": False}
    return j, cfg


def build_tiny256(docs):
    """A Llama 2 style tokenizer small enough for the 256-id test checkpoints in
    tests/golden (so text can go end to end through a real model in the suite):
    <unk>,<s>,</s> then pieces, no byte tokens (unknown characters become
    <unk>), normalizer Prepend+Replace, no pre-tokenizer."""
    specials = ["<unk>", "<s>", "</s>"]
    pieces, merges = train_sentencepiece_bpe(docs, 256, specials, alphabet_target=120)
    vocab = {}
    for t in specials + pieces:
        if t not in vocab and len(vocab) < 256:
            vocab[t] = len(vocab)
    merges = [m for m in merges if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    toks = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
    norm = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": SPIECE},
                                                {"type": "Replace", "pattern": {"String": " "}, "content": SPIECE}]}
    j = tokenizer_json(toks, norm, None, template("<s>", 1), SP_DECODER,
                       bpe_model(vocab, merges, unk="<unk>", fuse_unk=True, byte_fallback=False))
    cfg = {"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
           "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
           "model_max_length": 2048, "pad_token": None, "tokenizer_class": "LlamaTokenizer",
           "unk_token": "<unk>"}
    return j, cfg


def build_mistral(docs):
    """Mistral v0.3 layout as written by transformers' LlamaConverter(legacy=False):
    no normalizer, Metaspace(prepend_scheme=first, split=false), decoder
    Sequence[Replace, ByteFallback, Fuse, Strip] (the real v0.3 decoder),
    control tokens before the byte tokens. Extra added tokens for coverage:
    <think> (NOT special, normalized=true) and <mask> (special, lstrip+rstrip+single_word)."""
    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"] + [f"[control_{i}]" for i in range(8, 14)]
    pieces, merges = train_sentencepiece_bpe(docs, 3500 - 256 - len(specials) + 3, specials[:3])
    vocab = sp_vocab(specials, pieces)
    n = len(vocab)
    toks = [added(i, s) for i, s in enumerate(specials)]
    toks.append(added(n, "<think>", special=False, normalized=True))
    toks.append(added(n + 1, "<mask>", special=True, lstrip=True, rstrip=True, single_word=True))
    pre = {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "first", "split": False}
    j = tokenizer_json(toks, None, pre, template("<s>", 1), SP_DECODER,
                       bpe_model(vocab, merges, unk="<unk>", fuse_unk=True, byte_fallback=True))
    cfg = {"add_bos_token": True, "add_eos_token": False, "add_prefix_space": None, "bos_token": "<s>",
           "clean_up_tokenization_spaces": False, "eos_token": "</s>", "legacy": False,
           "model_max_length": 1000000000000000019884624838656, "pad_token": None, "sp_model_kwargs": {},
           "spaces_between_special_tokens": False, "tokenizer_class": "LlamaTokenizer",
           "unk_token": "<unk>", "use_default_system_prompt": False}
    return j, cfg


# Written with merges as "a b" strings (the format of the real gpt2 / Llama 2 /
# Llama 3 / Qwen2 files on the Hub); the others keep tokenizers 0.20's [a, b] pairs.
LEGACY_MERGES = {"gpt2_bytelevel", "llama3_bytelevel", "qwen2_bytelevel", "llama2_sentencepiece"}

BUILDERS = {
    "gpt2_bytelevel": build_gpt2,
    "llama3_bytelevel": build_llama3,
    "qwen2_bytelevel": build_qwen2,
    "smollm_bytelevel": build_smollm,
    "llama2_sentencepiece": build_llama2,
    "mistral_sentencepiece": build_mistral,
    "tiny256_sentencepiece": build_tiny256,
}


# --------------------------------------------------------------------------
# Test corpus.
# --------------------------------------------------------------------------

PY_CODE = '''import os
from typing import Optional


class Cache:
    """LRU cache."""

    def __init__(self, capacity: int = 128) -> None:
        self._data: dict[str, bytes] = {}
        self.capacity = capacity

    def get(self, key: str) -> Optional[bytes]:
        if key not in self._data:
            return None
        value = self._data.pop(key)
        self._data[key] = value  # move to end
        return value


if __name__ == "__main__":
    c = Cache(capacity=2)
    print(c.get("a"), os.getpid(), [x ** 2 for x in range(10)])
'''

CPP_CODE = '''#include <vector>
#include <cstdint>

namespace kvfold {
template <typename T>
struct Span {
\tT* data;
\tstd::size_t size;
};

int64_t Sum(const std::vector<int64_t>& xs) {
\tint64_t s = 0;
\tfor (auto x : xs) {
\t\tif (x < 0) { continue; }
\t\ts += x;   // accumulate
\t}
\treturn s;
}
}  // namespace kvfold
'''

FIXED_TEXTS = [
    # empty / single characters
    "", " ", "a", "A", "0", "\n", "\t", "!", "\u00e9", "\u4e2d", "\U0001F600", "\u2581", "\u0120",
    # prose, contractions
    "Hello world",
    "Hello, world! How are you today?",
    " Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "It's what we've seen: they'll go, I'm sure, and you'd agree. He's here; she'd left.",
    "IT'S WHAT WE'VE SEEN: THEY'LL GO, I'M SURE, AND YOU'D AGREE. HE'S, SHE'D, WE'RE",
    "don't can't won't shouldn't y'all rock'n'roll 'quoted' \"double\" `back`",
    "Mixed CASE 's 'S 'll 'LL 'Ll 've 'VE 're 'Re 'd 'D 'm 'M 't 'T",
    "kvfold inference runs the tokenizer before inference; kvfold!",
    # code
    PY_CODE, CPP_CODE,
    "def f(x):\n\treturn x\n\n\n\tpass\n",
    "if (a && b || !c) { x[i] = y->z; } else { return -1; }",
    "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "https://example.com/path?q=1&r=two#frag user@example.org",
    # whitespace runs
    " " * 200,
    "word" + " " * 200 + "word",
    "trailing spaces   ",
    "   leading spaces",
    "a\n\n\nb",
    "line one\r\nline two\r\n\r\nline four",
    "\t\t mixed \t tabs\t\n \t\n",
    "  \n  \n",
    "end with newline\n",
    "two  spaces   three    four",
    # digits
    "1 12 123 1234 12345 1234567890",
    "3.14159 2.71828 -0.5 1e-10 6.022e23",
    "+1 (555) 123-4567, +44 20 7946 0958",
    "2024-01-15T10:30:00Z version 1.2.3 port 8080",
    "\u0661\u0662\u0663 \u0967\u0968\u0969 \uff11\uff12\uff13 \u2460\u00b2",
    # CJK
    "\u4eca\u5929\u5929\u6c14\u5f88\u597d\uff0c\u6211\u4eec\u53bb\u516c\u56ed\u6563\u6b65\u5427\u3002",
    "\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002\u4e2d\u6587\u5206\u8bcd\u6ca1\u6709\u7a7a\u683c\u3002",
    "\u3053\u3093\u306b\u3061\u306f\u4e16\u754c\u3002\u30ab\u30bf\u30ab\u30ca\u3068\u3072\u3089\u304c\u306a\u3068\u6f22\u5b57\u3002",
    "\ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8\uc785\ub2c8\ub2e4. \uc548\ub155\ud558\uc138\uc694!",
    "Mixed \u4e2d\u6587 and English \u65e5\u672c\u8a9e text 123\u4e2a",
    # other scripts
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043a\u0430\u043a \u0434\u0435\u043b\u0430? \u042d\u0442\u043e \u0442\u0435\u0441\u0442.",
    "\u00dcber m\u00e4\u00dfig gro\u00dfe Stra\u00dfen f\u00e4hrt man sch\u00f6n. \u00c0 bient\u00f4t, gar\u00e7on!",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e, \u0939\u093f\u0928\u094d\u0926\u0940 \u092a\u093e\u0920\u0964",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645\u060c \u0647\u0630\u0627 \u0627\u062e\u062a\u0628\u0627\u0631.",
    "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd \u05e2\u05d5\u05b9\u05dc\u05b8\u05dd",
    "Ti\u1ebfng Vi\u1ec7t c\u00f3 d\u1ea5u",
    "Tie\u0302\u0301ng Vie\u0323\u0302t co\u0301 da\u0302\u0301u",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a \u1019\u103c\u1014\u103a\u1019\u102c \u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8",
    # emoji
    "I \u2764\ufe0f emoji \U0001F600\U0001F603\U0001F604",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 family",
    "\U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5\U0001F1E9\U0001F1EA flags",
    "\U0001F44D\U0001F3FB\U0001F44D\U0001F3FF\U0001F9D1\U0001F3FD\u200d\U0001F4BB",
    "\U0001F600",
    "\u2603\u2764\u263a\u2714\u00a9\u00ae\u2122",
    # combining marks / NFC-sensitive
    "e\u0301 \u00e9 cafe\u0301 caf\u00e9",
    "\u00c5 A\u030a \u212b",
    "\u1e9b\u0323 \ufb01 \u2126 \u03a9 \u00bd \u2460",
    "\uac00 \u1100\u1161 \u1112\u1161\u11ab",
    "n\u0303 o\u0308 u\u0308\u0301 a\u0300\u0301\u0302\u0303\u0304",
    # unusual whitespace / invisible
    "a\u00a0b\u00a0\u00a0c",
    "\u3000\u5168\u89d2\u3000space",
    "line\u2028separator\u2029para",
    "next\u0085line",
    "zero\u200bwidth\u200cnon\u200djoiner",
    "\ufeffBOM at start",
    "\u2009thin\u202fnarrow\u205fmath\u2003em",
    "\x00\x01\x1f\x7f control",
    "\u00ad soft\u00adhyphen",
    # special / added tokens inside text (every tokenizer gets every case)
    "<|begin_of_text|>Hello<|eot_id|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    " <|eot_id|> spaced <|eot_id|> ",
    "<|begin_of_tex",
    "<|begin_of_text|",
    "<|<|begin_of_text|>|>",
    "<|endoftext|>",
    "text<|endoftext|>more text<|endoftext|>",
    "<|endoftext|><|endoftext|> after",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
    "<s>x</s>",
    "<s> x </s>",
    "<s><s></s></s>",
    "Hello</s>",
    "<unk> unk <unk>",
    "[INST] What is 2+2? [/INST] 4</s>",
    "[INST]Hi[/INST]Hello",
    "before <think>thinking</think> after",
    "<think>start",
    "fill <mask> here",
    "fill<mask>here",
    "a <mask>, b",
    "  <mask>  ",
    "<repo_name>kvfold<file_sep>main.cc<|endoftext|>",
    "<|reserved_special_token_3|><|python_tag|>",
]


def training_samples(docs, n=50, seed=20240611):
    lines = []
    for path, text in docs:
        for line in text.split("\n"):
            if line.strip():
                lines.append(line)
    rng = random.Random(seed)
    return [lines[i] for i in sorted(rng.sample(range(len(lines)), n))]


def long_excerpt(docs):
    """~20 KB of a real file (argparse.py, code with prose docstrings)."""
    text = dict(docs)[os.path.join(_stdlib(), "argparse.py")]
    return text[2000:22000]


def build_corpus(docs):
    texts = list(FIXED_TEXTS)
    texts.append(long_excerpt(docs))
    texts.extend(training_samples(docs))
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


# --------------------------------------------------------------------------
# Golden records.
# --------------------------------------------------------------------------

def token_bytes_bytelevel(token):
    table = _bytelevel_char_to_byte()
    if all(ch in table for ch in token):
        return bytes(table[ch] for ch in token)
    return None


_B2C = None


def _bytelevel_char_to_byte():
    global _B2C
    if _B2C is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
            list(range(ord("\u00ae"), ord("\u00ff") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _B2C = {chr(c): b for b, c in zip(bs, cs)}
    return _B2C


def is_valid_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def decode_cases(tok: Tokenizer, name: str, tj: dict):
    """Id sequences for decode-only records (deduplicated, in a fixed order)."""
    vocab = tok.get_vocab(with_added_tokens=True)
    model_vocab = tj["model"]["vocab"]
    inv = {i: t for t, i in vocab.items()}
    size = tok.get_vocab_size(with_added_tokens=True)
    specials = [a["id"] for a in tj["added_tokens"] if a["special"]]
    nonspecial_added = [a["id"] for a in tj["added_tokens"] if not a["special"]]
    sp = "sentencepiece" in name
    enc = lambda s: tok.encode(s, add_special_tokens=False).ids  # noqa: E731
    cases = [[]]
    # prefixes / suffixes of encodings that cut multi-byte characters
    for s in ["\U0001F468\u200d\U0001F469\u200d\U0001F467", "\u4eca\u5929\u5929\u6c14", "\u00e9t\u00e9",
              "\ud55c\uad6d\uc5b4", "\U0001F1FA\U0001F1F8", "\u0928\u092e\u0938\u094d\u0924\u0947", "a\U0001F600b"]:
        ids = enc(s)
        for k in range(1, len(ids)):
            cases.append(ids[:k])
            cases.append(ids[k:])
        cases.append(ids)
    hello = enc("Hello world")
    cjk = enc("\u4e2d\u6587")
    for sid in specials[:4] + nonspecial_added:
        cases.append(hello[:1] + [sid] + hello[1:])
        cases.append([sid] + cjk[:1])  # special then a cut character
        cases.append(cjk[:1] + [sid] + cjk[1:])
        cases.append([sid])
        cases.append([sid, sid])
    if sp and "<0xE4>" not in vocab:
        pass  # no byte tokens (tiny256): the cut-character cases above cover decode
    elif sp:
        b = lambda *xs: [vocab[f"<0x{x:02X}>"] for x in xs]  # noqa: E731
        cases += [b(0xE4, 0xB8), b(0xE4, 0xB8, 0xAD), b(0x80), b(0xE4), b(0xF0, 0x9F, 0x98), b(0xF0, 0x9F, 0x98, 0x80),
                  b(0xE4, 0xB8) + hello, hello + b(0xE4, 0xB8) + hello, b(0xE4) + b(0xE4, 0xB8, 0xAD),
                  b(0xC3) + b(0xA9, 0x20), b(0x41, 0x42, 0x0A), b(0xFF, 0xFE), b(0xED, 0xA0, 0x80),
                  b(0xC0, 0xAF), b(0xF4, 0x90, 0x80, 0x80), b(0xE2, 0x96, 0x81) + hello,
                  [vocab["<unk>"]] + hello, hello + [vocab["<unk>"], vocab["<unk>"]],
                  b(0x20) + hello, [vocab["\u2581"]] if "\u2581" in vocab else [],
                  [vocab["\u2581"], vocab["\u2581"]] + hello if "\u2581" in vocab else []]
    else:
        byte_tok = {b: vocab[c] for c, b in _bytelevel_char_to_byte().items()}
        bt = lambda *xs: [byte_tok[x] for x in xs]  # noqa: E731
        cases += [bt(0xE4, 0xB8), bt(0xE4, 0xB8, 0xAD), bt(0x80), bt(0xE4), bt(0xF0, 0x9F, 0x98),
                  bt(0xE4, 0xB8) + hello, hello + bt(0xE4, 0xB8) + hello, bt(0xE4) + bt(0xE4, 0xB8, 0xAD),
                  bt(0xFF, 0xFE), bt(0xED, 0xA0, 0x80), bt(0xC0, 0xAF), bt(0xF4, 0x90, 0x80, 0x80),
                  bt(0x00, 0x0A, 0x20, 0x7F)]
        # multi-byte vocab tokens whose bytes are not valid UTF-8 on their own
        partial = []
        for t, i in sorted(model_vocab.items(), key=lambda kv: kv[1]):
            bb = token_bytes_bytelevel(t)
            if bb is not None and len(bb) >= 2 and not is_valid_utf8(bb):
                partial.append(i)
        for i in partial[:12]:
            cases.append([i])
            cases.append(hello + [i] + hello)
        if len(partial) >= 2:
            cases.append(partial[:2])
    # every id, in chunks (whole vocabulary including added tokens)
    for start in range(0, size, 256):
        cases.append(list(range(start, min(size, start + 256))))
    # all ids in reverse (catches state carried between tokens)
    cases.append(list(range(size - 1, -1, -1))[:512])
    out, seen = [], set()
    for c in cases:
        key = tuple(c)
        if key in seen:
            continue
        seen.add(key)
        assert all(i in inv for i in c), (name, c)
        out.append(c)
    return out


def golden_records(tok: Tokenizer, name: str, tj: dict, corpus):
    enc_records = []
    for text in corpus:
        for add in (True, False):
            e = tok.encode(text, add_special_tokens=add)
            enc_records.append({
                "text": text, "add_special_tokens": add, "ids": e.ids, "tokens": e.tokens,
                "decoded": tok.decode(e.ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(e.ids, skip_special_tokens=True)})
    dec_records = []
    for ids in decode_cases(tok, name, tj):
        for skip in (False, True):
            dec_records.append({"ids": ids, "skip_special_tokens": skip,
                                "text": tok.decode(ids, skip_special_tokens=skip)})
    return {"generator": GENERATOR, "tokenizers_version": tokenizers.__version__, "name": name,
            "encode": enc_records, "decode": dec_records}


def dump_json(obj, path, indent=None):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)
        f.write("\n")


def compact_golden_dump(g, path):
    """One record per line: small diffs, still plain JSON."""
    head = {k: g[k] for k in ("generator", "tokenizers_version", "name")}
    dumps = lambda o: json.dumps(o, ensure_ascii=False)  # noqa: E731
    lines = ["{" + dumps(head)[1:-1] + ","]
    for key in ("encode", "decode"):
        recs = g[key]
        lines.append(f' "{key}": [')
        for i, r in enumerate(recs):
            lines.append("  " + dumps(r) + ("," if i + 1 < len(recs) else ""))
        lines.append(" ]" + ("," if key == "encode" else ""))
    lines.append("}")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    with open(path, encoding="utf-8") as f:
        assert json.load(f) == g


def added_tokens_decoder(tj):
    return {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for a in tj["added_tokens"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--only", nargs="*", default=None, choices=sorted(BUILDERS))
    args = ap.parse_args()
    if tokenizers.__version__ != EXPECTED_TOKENIZERS_VERSION:
        sys.exit(f"need tokenizers=={EXPECTED_TOKENIZERS_VERSION}, have {tokenizers.__version__}")
    docs = corpus_documents()
    total = sum(len(t.encode()) for _, t in docs)
    print(f"training text: {len(docs)} files, {total} bytes, sha256 {corpus_sha256(docs)}")
    corpus = build_corpus(docs)
    print(f"test corpus: {len(corpus)} texts, {sum(len(t.encode()) for t in corpus)} bytes")
    for name in args.only or list(BUILDERS):
        tj, cfg = BUILDERS[name](docs)
        staged = Tokenizer.from_str(json.dumps(tj))  # tokenizers must accept it
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        tpath = os.path.join(d, "tokenizer.json")
        with open(tpath, "w", encoding="utf-8", newline="\n") as f:
            if name in LEGACY_MERGES:
                # Hub files saved before tokenizers 0.20 hold merges as "a b" strings.
                d_json = json.loads(staged.to_str())
                d_json["model"]["merges"] = [" ".join(m) for m in d_json["model"]["merges"]]
                f.write(json.dumps(d_json, ensure_ascii=False, indent=2) + "\n")
            else:
                f.write(staged.to_str(pretty=True))
        tok = Tokenizer.from_file(tpath)  # golden records come from the committed file
        final = json.loads(tok.to_str())
        assert final == json.loads(staged.to_str()), name
        cfg = dict(cfg)
        cfg["added_tokens_decoder"] = added_tokens_decoder(final)
        dump_json(dict(sorted(cfg.items())), os.path.join(d, "tokenizer_config.json"), indent=2)
        g = golden_records(tok, name, final, corpus)
        compact_golden_dump(g, os.path.join(d, "golden.json"))
        sizes = {f: os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))}
        print(f"{name}: vocab {tok.get_vocab_size(with_added_tokens=True)}, "
              f"{len(g['encode'])} encode + {len(g['decode'])} decode records, sizes {sizes}")


if __name__ == "__main__":
    main()
