#!/usr/bin/env bash
# Tensor-parallel communication on this machine: kvfold bench_tp with TP = 1,
# 2 and 4 ranks (MPI, CPU, oversubscribed when ranks > cores), one JSON per
# run under tools/parallel/results/DATE/. Usage: tools/parallel/bench_tp.sh
# [extra bench_tp flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //launch:kvfold >&2
out="tools/parallel/results/$(date +%F)"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for t in 1 2 4; do
  timeout -k 5 600 mpirun -np "$t" --oversubscribe --bind-to none --mca btl self,vader \
    --mca pml ob1 --mca oob_tcp_if_include lo bazel-bin/launch/kvfold bench_tp \
    --shape=llama-3.2-1b --bench_layers=4 --prefill_tokens=128 --decode_tokens=16 \
    --threads=1 "$@" | tee "$out/tp$t.json"
done
