#!/usr/bin/env bash
# Builds models/tokenizer/tokenizer_fuzz.cc with clang's libFuzzer and
# AddressSanitizer and runs it.
#   tools/tokenizer/fuzz.sh [SECONDS] [parser|encoder]     (default: 60 parser)
# parser: mutates tokenizer.json files (+ text after a NUL byte);
# encoder: mutates text for tests/golden/tokenizers/llama3_bytelevel.
# Crashes are written to /tmp/kvfold_fuzz/ (libFuzzer's crash-* files).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN="${1:-60}"
MODE="${2:-parser}"
OUT=/tmp/kvfold_fuzz
mkdir -p "$OUT/corpus_$MODE"
SRCS=(models/tokenizer/{tokenizer_fuzz,tokenizer,bpe,added_tokens,pipeline,decoders,byte_level,unicode,regex,regex_parser}.cc models/files.cc)
ABSL_LIBS=$(ls /usr/lib/x86_64-linux-gnu/libabsl_*.so | sed 's|.*/lib\(absl_[^.]*\)\.so|-l\1|' | tr '\n' ' ')
if [ ! -x "$OUT/tokenizer_fuzz" ] || [ -n "$(find "${SRCS[@]}" models/tokenizer/*.h -newer "$OUT/tokenizer_fuzz")" ]; then
  echo "fuzz.sh: building with clang (-fsanitize=fuzzer,address)" >&2
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address -I. "${SRCS[@]}" $ABSL_LIBS \
    -o "$OUT/tokenizer_fuzz"
fi
if [ "$MODE" = parser ]; then
  for f in tests/golden/tokenizers/*/tokenizer.json; do
    name=$(basename "$(dirname "$f")")
    { cat "$f"; printf '\0Hello world 12345 東京 🙂 <s>'; } > "$OUT/corpus_$MODE/$name"
  done
  exec "$OUT/tokenizer_fuzz" -max_total_time="$SECONDS_TO_RUN" -max_len=400000 \
    -artifact_prefix="$OUT/" "$OUT/corpus_$MODE"
else
  python3 - "$OUT/corpus_$MODE" <<'PY'
import json, sys, os
g = json.load(open("tests/golden/tokenizers/llama3_bytelevel/golden.json"))
for i, c in enumerate(g["encode"][:200:2]):
    open(os.path.join(sys.argv[1], f"seed{i}"), "w").write(c["text"])
PY
  KVFOLD_FUZZ_TOKENIZER=tests/golden/tokenizers/llama3_bytelevel exec "$OUT/tokenizer_fuzz" \
    -max_total_time="$SECONDS_TO_RUN" -max_len=4096 -artifact_prefix="$OUT/" "$OUT/corpus_$MODE"
fi
