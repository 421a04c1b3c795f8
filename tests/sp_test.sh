#!/usr/bin/env bash
# sp_test under mpirun with 2 and 4 ranks (MPI communicator, CPU,
# oversubscribed): sequence-parallel answers vs SP = 1, transformers and
# the union of the ranks' caches; bad input.
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
    echo "ok: SP=$n"
    grep -E "^rank 0 " "$TMPDIR/out"
  else
    echo "FAIL: SP=$n"; cat "$TMPDIR/out"; failures=$((failures + 1))
  fi
done
echo "sp_test: $failures failure(s)"
[ "$failures" -eq 0 ]
