#!/usr/bin/env bash
# A rank that stays alive but stops answering (--fault=R:hang, or SIGSTOP
# from outside at a random point of prefill or decode): every other rank
# ends within the --collective_timeout plus the health check, with a message
# naming the silent rank; mpirun exits non-zero; no kvfold process is left
# running; a batch job's output stays valid and resumes to every job exactly
# once, with the answers of an uninterrupted one-rank run.
set -u
KVFOLD="$1"
MODEL=tests/golden/llama3_f32
source parallel/mpirun_env.sh
source tests/run_faults.sh
T="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
RANDOM=20261123
LIMIT=3  # --collective_timeout; the health check waits as long again
# Seconds from the stop to the end of mpirun: a collective's timeout and
# health check (2 x LIMIT); in run, the silence limit (2 x LIMIT + 10 s)
# and a health check, plus the job a rank was finishing.
MAX_END=$((5 * LIMIT + 30))

# The kvfold process of rank $2 (from its environment) whose command line
# contains $1.
rank_pid() {
  local tag="$1" want="$2"
  for p in $(kvfold_processes "$tag"); do
    r=$(tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ "$r" = "$want" ] && echo "$p"
  done
}

# Waits until the rank runs (its process exists) and `ready` (a command)
# succeeds, stops the rank (SIGSTOP: alive, silent), then waits for mpirun.
# Sets rc and took (seconds from the stop to the end).
stop_rank_of() {
  local launcher="$1" tag="$2" rank="$3" ready="$4" pid=""
  for _ in $(seq 1 600); do
    [ -z "$pid" ] && pid=$(rank_pid "$tag" "$rank")
    [ -n "$pid" ] && $ready && break
    kill -0 "$launcher" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$pid" ] && kill -STOP "$pid"
  local start=$(date +%s)
  wait "$launcher"
  rc=$?
  took=$(($(date +%s) - start))
  sleep 1
  local left=$(kvfold_processes "$tag")
  [ -z "$left" ] || fail "$tag: kvfold processes left: $left"
}

# --- generate, TP = 2: rank 1 hangs right after start-up.
start=$(date +%s)
mpi 2 "$KVFOLD" generate --model=$MODEL --ids=1,2,3 --max_new_tokens=4 --threads=1 --tp=2 \
  --collective_timeout=$LIMIT --fault=1:hang >"$T/out" 2>"$T/err"
rc=$?
took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le $MAX_END ] &&
   grep -q "rank 0 of 2: .* timed out after 3s; rank 1 did not answer a health check" "$T/err"; then
  echo "ok: generate TP=2, rank 1 hangs: rc=$rc after ${took}s"
else
  fail "generate TP=2, rank 1 hangs: rc=$rc after ${took}s"; cat "$T/err"
fi

# --- generate, TP = 4: one rank stopped mid-decode (a long answer), once it
# has used 3 s of CPU time (start-up takes far less, even under ASan).
victim=$((RANDOM % 4))
tag="--seed=$$"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
decoding() { [ "$(cpu_ticks "$pid")" -ge 300 ]; }
MPI_TIMEOUT=120 mpi 4 "$KVFOLD" generate --model=$MODEL --ids=1,2,3,4,5 --max_new_tokens=100000 \
  --ignore_eos --threads=1 --tp=4 --collective_timeout=$LIMIT "$tag" >"$T/out" 2>"$T/err" &
stop_rank_of $! "$tag" $victim decoding
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le $MAX_END ] &&
   grep -q "timed out after 3s; rank $victim did not answer a health check" "$T/err"; then
  echo "ok: generate TP=4, rank $victim stopped mid-decode: rc=$rc after ${took}s"
else
  fail "generate TP=4, rank $victim stopped: rc=$rc after ${took}s"; cat "$T/err"
fi

# --- run: a rank stopped at a random point, resumed; every job exactly once.
jobs="$T/jobs.jsonl"
make_jobs "$jobs" 24 h "[[5]]" 1500
"$KVFOLD" run --model=$MODEL --input="$jobs" --output="$T/ref.jsonl" --threads=1 2>/dev/null ||
  fail "reference run"
answers "$T/ref.jsonl" >"$T/ref.txt" || fail "reference output"

# (ranks, extra flags, the rank to stop, what the others must say): the rank
# is stopped once 1 to 6 result lines are written.
out=""
want_lines=0
written() { [ -f "$out" ] && [ "$(wc -l <"$out")" -ge "$want_lines" ]; }
scenario() {
  local n="$1" flags="$2" victim="$3" want="$4" name="$5"
  out="$T/$name.jsonl"
  want_lines=$((1 + RANDOM % 6))
  MPI_TIMEOUT=120 mpi "$n" "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$out" \
    --threads=1 --collective_timeout=$LIMIT $flags >/dev/null 2>"$T/$name.err" &
  stop_rank_of $! "--output=$out" "$victim" written
  local lines=$( [ -f "$out" ] && wc -l <"$out" || echo 0)
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le $MAX_END ] && grep -q "$want" "$T/$name.err" &&
     answers "$out" >/dev/null; then
    echo "ok: run $name: rank $victim stopped at $lines of 24 jobs written, rc=$rc after ${took}s"
  else
    fail "run $name: rank $victim stopped: rc=$rc after ${took}s, $lines lines"; cat "$T/$name.err"
  fi
  mpi "$n" "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$out" --threads=1 $flags \
    >/dev/null 2>"$T/$name.resume" || { fail "run $name: resume"; cat "$T/$name.resume"; }
  answers "$out" >"$T/$name.txt" || fail "run $name: output broken"
  if cmp -s "$T/ref.txt" "$T/$name.txt"; then
    echo "ok: run $name resumed: every job once, answers = one rank"
  else
    fail "run $name: resumed output differs from one rank"; diff "$T/ref.txt" "$T/$name.txt" | head
  fi
}
scenario 2 "" 1 "rank 1 (leader of a data-parallel replica) has sent nothing" dp2_leader
scenario 2 "" 0 "Recv from rank 0 tag 13 timed out after 16s; rank 0 did not answer" dp2_writer
scenario 3 "" 2 "rank 2 (leader of a data-parallel replica) has sent nothing" dp3_leader
scenario 2 "--tp=2" $((RANDOM % 2)) "did not answer a health check" tp2

echo "hang_test: $failures failure(s)"
[ "$failures" -eq 0 ]
