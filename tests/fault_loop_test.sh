#!/usr/bin/env bash
# A batch job under mpirun (2 data-parallel ranks) whose ranks are killed
# (SIGKILL) at random points, again and again, each time resumed from the
# same output file: after every kill mpirun exits non-zero within the
# timeout, no kvfold process is left behind, the output holds only whole
# lines and no job twice; at the end every job is there exactly once with
# the answers of an uninterrupted one-rank run. Seeded (RANDOM=20261123).
set -u
KVFOLD="$1"
MODEL=tests/golden/llama3_f32
source parallel/mpirun_env.sh
source tests/run_faults.sh
T="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
RANDOM=20261123

jobs="$T/jobs.jsonl"
make_jobs "$jobs" 60 k "[[5], [6]]" 600
"$KVFOLD" run --model=$MODEL --input="$jobs" --output="$T/ref.jsonl" --threads=1 2>/dev/null ||
  fail "reference run"
answers "$T/ref.jsonl" >"$T/ref.txt" || fail "reference output"

out="$T/out.jsonl"
ranks_of_run() { kvfold_processes "--output=$out"; }
interrupted=0
for round in $(seq 1 6); do
  before=$( [ -f "$out" ] && wc -l <"$out" || echo 0)
  [ "$before" -ge 60 ] && break
  MPI_TIMEOUT=120 mpi 2 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$out" \
    --threads=1 --collective_timeout=10 >/dev/null 2>"$T/stderr.$round" &
  launcher=$!
  # Let it write 1 to 6 more lines (or start, or finish), then kill a rank.
  want=$((before + 1 + RANDOM % 6))
  for _ in $(seq 1 500); do
    [ -f "$out" ] && [ "$(wc -l <"$out")" -ge "$want" ] && break
    kill -0 $launcher 2>/dev/null || break
    sleep 0.01
  done
  victims=($(ranks_of_run))
  start=$(date +%s)
  if [ ${#victims[@]} -gt 0 ]; then
    victim=${victims[$((RANDOM % ${#victims[@]}))]}
    kill -9 "$victim" 2>/dev/null
  fi
  wait $launcher
  rc=$?
  took=$(($(date +%s) - start))
  lines=$( [ -f "$out" ] && wc -l <"$out" || echo 0)
  if [ "$lines" -lt 60 ]; then
    interrupted=$((interrupted + 1))
    [ $rc -ne 0 ] || fail "round $round: killed mid-run but mpirun exited 0"
  fi
  [ "$took" -le 60 ] || fail "round $round: $took s to end after the kill"
  sleep 1
  [ -z "$(ranks_of_run)" ] || fail "round $round: kvfold processes left behind: $(ranks_of_run)"
  answers "$out" >/dev/null || fail "round $round: output broken after the kill"
  echo "ok: round $round: killed a rank at $lines of 60 jobs written, mpirun rc=$rc after ${took}s"
done
# Resume to the end.
mpi 2 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$out" --threads=1 >/dev/null \
  2>"$T/stderr.final" || { fail "final resume"; cat "$T/stderr.final"; }
answers "$out" >"$T/out.txt" || fail "final output broken"
if cmp -s "$T/ref.txt" "$T/out.txt"; then
  echo "ok: after $interrupted interrupted rounds every job is there once, answers = one rank"
else
  fail "final output differs from the uninterrupted run"; diff "$T/ref.txt" "$T/out.txt" | head
fi
[ "$interrupted" -ge 3 ] || fail "only $interrupted rounds were interrupted mid-run"
echo "fault_loop_test: $failures failure(s)"
[ "$failures" -eq 0 ]
