#!/usr/bin/env bash
# Sequence-parallel prefill on this machine: kvfold bench_sp with SP = 1, 2
# and 4 ranks (MPI, CPU, oversubscribed when ranks > cores; tiny-256 random
# weights, H2O with 512 slots, 32K-256K-token documents), one JSON line per
# document length under tools/parallel/results/DATE/spS.jsonl. Usage:
# tools/parallel/bench_sp.sh [extra bench_sp flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
bazel build //launch:kvfold >&2
out="tools/parallel/results/$(date +%F)"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for s in 1 2 4; do
  timeout -k 5 3000 mpirun -np "$s" --oversubscribe --bind-to none --mca btl self,vader \
    --mca pml ob1 --mca oob_tcp_if_include lo bazel-bin/launch/kvfold bench_sp \
    --threads=1 "$@" | tee "$out/sp$s.jsonl"
done
