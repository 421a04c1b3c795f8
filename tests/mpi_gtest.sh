#!/usr/bin/env bash
# A gtest binary under mpirun with 2 and 4 ranks (MPI communicator, CPU,
# oversubscribed): tp_test (tensor-parallel logits and greedy tokens vs TP = 1
# and transformers) and sp_test (sequence-parallel answers vs SP = 1,
# transformers and the union of the ranks' caches; bad input).
# Usage: mpi_gtest.sh NAME BINARY
set -u
NAME="$1"
BIN="$2"
MPI_TIMEOUT=300
source parallel/mpirun_env.sh
# Every rank is a gtest binary: left set, they would all write Bazel's
# test.xml at once (a corrupt file); this script's result is the verdict.
unset XML_OUTPUT_FILE GTEST_OUTPUT
failures=0
for n in 2 4; do
  if mpi "$n" "$BIN" >"$TMPDIR/out" 2>&1; then
    echo "ok: $NAME with $n ranks"
    grep -E "^rank [0-9]+ vocab|^rank 0[ :]" "$TMPDIR/out"
  else
    echo "FAIL: $NAME with $n ranks"; cat "$TMPDIR/out"; failures=$((failures + 1))
  fi
done
echo "$NAME: $failures failure(s)"
[ "$failures" -eq 0 ]
