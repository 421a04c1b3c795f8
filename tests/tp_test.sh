#!/usr/bin/env bash
# tp_test under mpirun with 2 and 4 ranks (MPI communicator, CPU,
# oversubscribed): tensor-parallel logits and greedy tokens vs TP = 1 and
# transformers on every golden checkpoint.
set -u
BIN="$1"
MPI_TIMEOUT=300
source parallel/mpirun_env.sh
# Every rank is a gtest binary: left set, they would all write Bazel's
# test.xml at once (a corrupt file); this script's result is the verdict.
unset XML_OUTPUT_FILE GTEST_OUTPUT
failures=0
for n in 2 4; do
  if mpi "$n" "$BIN" >"$TMPDIR/out" 2>&1; then
    echo "ok: TP=$n"
    grep -E "^rank [0-9]+ vocab|^rank 0[ :]" "$TMPDIR/out"
  else
    echo "FAIL: TP=$n"; cat "$TMPDIR/out"; failures=$((failures + 1))
  fi
done
echo "tp_test: $failures failure(s)"
[ "$failures" -eq 0 ]
