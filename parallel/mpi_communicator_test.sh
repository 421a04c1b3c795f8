#!/usr/bin/env bash
# The collective suite over MPI with 2 and 4 ranks (oversubscribed), and a
# rank that dies: the job ends non-zero within the timeout, no hang.
set -u
SUITE="$1"
source parallel/mpirun_env.sh
failures=0
for n in 2 4; do
  if mpi "$n" "$SUITE" >"$TMPDIR/out" 2>"$TMPDIR/err"; then
    echo "ok: $n ranks: $(grep -c 'failure(s)' "$TMPDIR/out") ranks reported"
  else
    echo "FAIL: $n ranks"; cat "$TMPDIR/out" "$TMPDIR/err"; failures=$((failures + 1))
  fi
done
start=$(date +%s)
mpi 3 "$SUITE" --die_rank=1 --timeout_ms=3000 >"$TMPDIR/out" 2>"$TMPDIR/err"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] || ! grep -q "rank 1" "$TMPDIR/err"; then
  echo "FAIL: a dying rank: rc=$rc after ${elapsed}s"; cat "$TMPDIR/err"; failures=$((failures + 1))
else
  echo "ok: a dying rank ends the job with rc=$rc after ${elapsed}s: $(grep -m1 'rank' "$TMPDIR/err")"
fi
echo "mpi_communicator_test: $failures failure(s)"
[ "$failures" -eq 0 ]
