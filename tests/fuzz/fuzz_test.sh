#!/usr/bin/env bash
# Each harness of tests/fuzz on its seed files and thousands of mutations of
# them (fuzz_driver.cc): the parsers must reject or accept every input
# without a crash, a sanitizer report or a hang.
set -euo pipefail
SAFETENSORS="$1" CONFIG="$2" JOBS="$3" COMPRESSOR="$4"
G=tests/golden
T="${TEST_TMPDIR:-$(mktemp -d)}"
"$SAFETENSORS" 5000 $G/lococo/parity/official.compressor.safetensors \
  $G/matryoshka/parity.safetensors $G/llama_f16/model.safetensors
"$CONFIG" 20000 $G/*/config.json tools/model/config.json
head -n 3 tools/demo/jobs.jsonl | cut -c1-4000 > "$T/jobs.jsonl"
cat >> "$T/jobs.jsonl" <<'JSONL'
{"id": "a", "document": "The key is 42.", "questions": ["What is the key?"], "max_new_tokens": 8, "cache": {"slots": 64, "h2o": {"window": 8}}, "feature_budget": 0.5}
{"id": 7, "document_ids": [1, 2, 3], "question_ids": [[4, 5]], "temperature": 0.7, "top_k": 5, "top_p": 0.9, "seed": 3, "question_mode": "aware", "cache": {"layer_slots": [8, 16], "snapkv": {"window": 4, "kernel": 3}}}
JSONL
# Deep nesting: a million levels in an id and in a known field (these
# crashed the job parser by recursion before its depth limit).
python3 -c 'print("{\"id\": " + "[" * 1000000 + "]" * 1000000 + "}")' >"$T/deep_id.jsonl"
python3 -c 'print("{\"id\": 1, \"cache\": " + "{\"a\": " * 200000 + "1" + "}" * 200000 + "}")' \
  >"$T/deep_cache.jsonl"
"$JOBS" 0 "$T/deep_id.jsonl" "$T/deep_cache.jsonl"
"$JOBS" 20000 "$T/jobs.jsonl"
"$COMPRESSOR" 5000 $G/lococo/parity/official.compressor.safetensors \
  $G/lococo/parity/pure.compressor.safetensors $G/matryoshka/parity.safetensors
