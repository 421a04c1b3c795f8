#!/usr/bin/env bash
# LoCoCo's cost on this machine (random-weight models, a random module of
# the calibrated shape: M = 512 slots, kernel 21, hh_keep_rate 0.5), one JSON
# file per run under tools/bench/results/DATE/:
#   lococo_decode_*.json   one compression step vs one decode step and its
#                          amortised share of decode time, for the official
#                          buffer (16) and a larger one, on a small model and
#                          on Llama-3.1-8B's layer shape (4 of its layers);
#   lococo_prefill.json    prefill throughput at 512 slots vs the full cache
#                          for 8K-128K-token documents (tiny-256 model).
# Usage: tools/bench/lococo.sh [extra bench_cache flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //launch:kvfold >&2
out="tools/bench/results/$(date +%F)"
mkdir -p "$out"
K=bazel-bin/launch/kvfold
for buffer in 16 64; do
  $K bench_cache --cache=lococo --cache_slots=512 --cache_buffer=$buffer \
    --bench_model=tiny-256 --doc_lengths=2048 --full_max_length=2048 \
    --decode_tokens=$((4 * (buffer + 1) + 1)) "$@" | tee "$out/lococo_decode_tiny256_b$buffer.json"
  $K bench_cache --cache=lococo --cache_slots=512 --cache_buffer=$buffer \
    --bench_model=llama-3.1-8b --bench_layers=4 --doc_lengths=1024 --full_max_length=1024 \
    --decode_tokens=$((2 * (buffer + 1) + 1)) "$@" | tee "$out/lococo_decode_8b4l_b$buffer.json"
done
$K bench_cache --cache=lococo --cache_slots=512 --bench_model=tiny-256 \
  --doc_lengths=8192,32768,131072 --full_max_length=32768 --decode_tokens=18 "$@" |
  tee "$out/lococo_prefill.json"
