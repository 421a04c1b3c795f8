#!/usr/bin/env bash
# Runs the tokenizer fuzz harness briefly: the parser on mutated
# tokenizer.json files (small and real ones), then the encoder on mutated
# corpus text with a byte-level and a SentencePiece-style vocabulary.
set -euo pipefail
DRIVER="$1"
G=tests/golden/tokenizers
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
small_seed="$tmp/small.json"
cat > "$small_seed" <<'JSON'
{"added_tokens": [{"id": 6, "content": "<s>", "special": true, "lstrip": true}],
 "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Prepend", "prepend": "▁"}]},
 "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
   {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}| ?\\p{L}+|\\s+(?!\\S)"}, "behavior": "Isolated", "invert": false},
   {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}]},
 "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
   "special_tokens": {"<s>": {"id": "<s>", "ids": [6], "tokens": ["<s>"]}}},
 "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
 "model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "fuse_unk": true,
   "vocab": {"<unk>": 0, "a": 1, "b": 2, "▁": 3, "ab": 4, "<0xE4>": 5, "<0xB8>": 7, "▁ab": 8},
   "merges": ["a b", "▁ ab"]}}
JSON
"$DRIVER" 3000 --nul_sample "$small_seed"
"$DRIVER" 60 --nul_sample "$G/llama3_bytelevel/tokenizer.json" "$G/llama2_sentencepiece/tokenizer.json" \
  "$G/qwen2_bytelevel/tokenizer.json"
corpus="$tmp/corpus.txt"
# Seed texts: the tokenizer fixtures' own corpus lines (JSON-escaped is fine
# as text: it is arbitrary input either way).
head -c 20000 "$G/llama3_bytelevel/golden.json" > "$corpus"
KVFOLD_FUZZ_TOKENIZER="$G/llama3_bytelevel" "$DRIVER" 1500 "$corpus"
KVFOLD_FUZZ_TOKENIZER="$G/llama2_sentencepiece" "$DRIVER" 1500 "$corpus"
KVFOLD_FUZZ_TOKENIZER="$G/qwen2_bytelevel" "$DRIVER" 800 "$corpus"
