#!/usr/bin/env bash
# MatryoshkaKV's memory and decode time on this machine: SnapKV at 512 slots
# alone and combined with 100%, 60%, 40% and 25% feature budgets (random
# orthogonal projections, uniform ranks), next to the full cache, for 8K and
# 16K-token documents (tiny-256 random model), 256 decode steps. One JSON row per run and a
# final {"summary": "matryoshka"} table with bytes and decode time over the
# full cache and over SnapKV alone, all measured in the same run.
# Usage: tools/bench/matryoshka.sh [extra bench_cache flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //launch:kvfold >&2
out="tools/bench/results/$(date +%F)"
mkdir -p "$out"
bazel-bin/launch/kvfold bench_cache --cache=snapkv --cache_slots=512 \
  --doc_lengths=8192,16384 --feature_budgets=1,0.6,0.4,0.25 --decode_tokens=256 "$@" |
  tee "$out/matryoshka_tiny256.jsonl"
