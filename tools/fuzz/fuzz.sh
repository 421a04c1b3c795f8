#!/usr/bin/env bash
# libFuzzer runs of the tests/fuzz harnesses and the tokenizer's (clang,
# AddressSanitizer + UndefinedBehaviorSanitizer), built with `--config=fuzz`
# in their own Bazel output base:
#   tools/fuzz/fuzz.sh [SECONDS_EACH] [HARNESS...]   (default: 60, all five)
# Exit status 1 when any harness found something (CI runs it bounded).
# Seeds: the same files as tests/fuzz/fuzz_test.sh. Corpora and any crash-*
# artifacts go to /tmp/kvfold_fuzz/NAME/; one summary line per harness
# (executions, seconds, crashes) is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
SECS="${1:-60}"
shift || true
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(safetensors config jobs compressor tokenizer)
OB=/tmp/ob_fuzz
bazel --output_base=$OB build --config=fuzz //tests/fuzz:all //models/tokenizer:fuzz_driver >&2 ||
  exit 1
BIN=$(bazel --output_base=$OB info --config=fuzz bazel-bin 2>/dev/null)
G=tests/golden
OUT=/tmp/kvfold_fuzz
summary=()
found=0
for name in "${NAMES[@]}"; do
  dir="$OUT/$name"
  mkdir -p "$dir/corpus"
  case "$name" in
    safetensors) cp $G/lococo/parity/official.compressor.safetensors $G/matryoshka/parity.safetensors \
                    $G/llama_f16/model.safetensors "$dir/corpus/" ;;
    config) for f in $G/*/config.json; do cp "$f" "$dir/corpus/$(basename "$(dirname "$f")").json"; done ;;
    jobs) head -n 3 tools/demo/jobs.jsonl | cut -c1-4000 > "$dir/corpus/demo.jsonl" ;;
    compressor) cp $G/lococo/parity/*.compressor.safetensors $G/matryoshka/parity.safetensors "$dir/corpus/" ;;
    tokenizer) for f in $G/tokenizers/*/tokenizer.json; do
                 { cat "$f"; printf '\0Hello world 12345 東京 🙂 <s>'; } \
                   >"$dir/corpus/$(basename "$(dirname "$f")")"
               done ;;
    *) echo "fuzz.sh: unknown harness $name" >&2; exit 2 ;;
  esac
  binary="$BIN/tests/fuzz/${name}_fuzz"
  [ "$name" = tokenizer ] && binary="$BIN/models/tokenizer/fuzz_driver"  # its libFuzzer build
  "$binary" -max_total_time="$SECS" -rss_limit_mb=4096 -max_len=200000 \
    -artifact_prefix="$dir/" -print_final_stats=1 "$dir/corpus" >"$dir/log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$')
  crashes=$(ls "$dir" | grep -c -E '^(crash|leak|timeout|oom)-' || true)
  summary+=("$name: ${execs:-?} executions in $SECS s, exit $rc, crash/leak/timeout/oom files: $crashes")
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then found=1; tail -n 30 "$dir/log" >&2; fi
done
printf '%s\n' "${summary[@]}"
[ "$found" -eq 0 ]
