#!/usr/bin/env bash
# The rank benchmarks on this machine, with 1, 2 and 4 ranks (MPI, CPU,
# oversubscribed when ranks > cores), output under tools/parallel/results/DATE/:
#   tp: kvfold bench_tp, tensor-parallel communication (llama-3.2-1b shape cut
#       to 4 layers, 128-token prefill, 16 decode steps): tpT.json;
#   sp: kvfold bench_sp, sequence-parallel prefill (tiny-256 random weights,
#       H2O with 512 slots, 32K-256K-token documents, default blocks): spS.jsonl;
#   sp_balance: the same with 2 and 4 ranks, equal blocks then blocks
#       balanced by cost (--sp_balance), one after the other:
#       spS_equal.jsonl, spS_balanced.jsonl.
# Usage: tools/parallel/bench_ranks.sh tp|sp|sp_balance [extra flags]
set -euo pipefail
cd "$(dirname "$0")/../.."
kind="${1:?usage: bench_ranks.sh tp|sp [flags]}"
shift
case "$kind" in
  tp) flags=(bench_tp --shape=llama-3.2-1b --bench_layers=4 --prefill_tokens=128
             --decode_tokens=16) suffix=json limit=600 ;;
  sp | sp_balance) flags=(bench_sp) suffix=jsonl limit=3000 ;;
  *) echo "bench_ranks.sh: unknown benchmark \"$kind\" (tp, sp or sp_balance)" >&2; exit 2 ;;
esac
bazel build //launch:kvfold >&2
out="tools/parallel/results/$(date +%F)"
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ranks() {  # ranks N OUTPUT [flags]
  local n="$1" file="$2"
  shift 2
  timeout -k 5 "$limit" mpirun -np "$n" --oversubscribe --bind-to none --mca btl self,vader \
    --mca pml ob1 --mca oob_tcp_if_include lo bazel-bin/launch/kvfold "${flags[@]}" \
    --threads=1 "$@" | tee "$file"
}
if [ "$kind" = sp_balance ]; then
  for n in 2 4; do
    ranks "$n" "$out/sp${n}_equal.$suffix" --sp_balance=false "$@"
    ranks "$n" "$out/sp${n}_balanced.$suffix" --sp_balance "$@"
  done
else
  for n in 1 2 4; do ranks "$n" "$out/$kind$n.$suffix" "$@"; done
fi
