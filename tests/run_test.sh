#!/usr/bin/env bash
# kvfold run end to end: a JSONL job file in, one result line per job out.
# Answers equal `kvfold generate` on the same input (generate is checked
# against transformers by the golden tests); failing jobs are recorded and
# the run goes on; a run killed mid-way loses no written line and a rerun
# finishes the rest with the same answers; data-parallel and tensor-parallel
# runs under mpirun give the same answers; bad input is refused before any
# job starts, naming the line.
set -u
KVFOLD="$1"
MODEL=tests/golden/llama3_f32
source parallel/mpirun_env.sh
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# check.py OUTPUT [assertions...]: every line a JSON object with an id;
# prints "id<TAB>answer ids" per job (sorted) for comparisons.
cat >"$tmp/answers.py" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().split("\n")
assert lines[-1] == "", "output does not end with a newline"
seen = {}
for n, line in enumerate(lines[:-1], 1):
    j = json.loads(line)  # raises on a half or corrupt line
    assert isinstance(j, dict) and "id" in j, f"line {n}: no id"
    assert j["id"] not in seen, f"line {n}: id {j['id']} written twice"
    seen[j["id"]] = j
for i in sorted(seen):
    j = seen[i]
    if "error" in j:
        print(f"{i}\terror")
    else:
        print(i + "\t" + ";".join(",".join(map(str, a["ids"])) for a in j["answers"]))
EOF
answers() { python3 "$tmp/answers.py" "$1"; }

# ---- A job file of token ids: answers equal generate's --------------------
jobs="$tmp/jobs.jsonl"
: >"$jobs"
for i in $(seq 1 12); do
  echo "{\"id\": \"doc$i\", \"document_ids\": [1, $((i + 3)), $((i * 7 % 250)), 42, $((i + 100))], \"question_ids\": [[5, 6], [$((i + 10))]], \"max_new_tokens\": 12, \"ignore_eos\": true}" >>"$jobs"
done
echo '{"id": "bad-vocab", "document_ids": [1, 300]}' >>"$jobs"
echo '{"id": "bad-field", "document_ids": [1, 2], "max_new_tokens": -3}' >>"$jobs"
echo '{"id": "cont", "document_ids": [1, 9, 8, 7], "max_new_tokens": 6, "note": "x"}' >>"$jobs"
echo '{"id": "compressed", "document_ids": [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27], "cache": {"streaming": {"sinks": 2}, "slots": 6}, "max_new_tokens": 8, "ignore_eos": true}' >>"$jobs"

"$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/one.jsonl" --progress_interval=0 \
  >"$tmp/stdout" 2>"$tmp/stderr"
rc=$?
if [ $rc -ne 0 ]; then fail "run exited $rc"; cat "$tmp/stderr"; fi
answers "$tmp/one.jsonl" >"$tmp/one.txt" || fail "output is not clean JSONL"
[ "$(wc -l <"$tmp/one.txt")" -eq 16 ] && ok "16 jobs, 16 lines" || fail "want 16 jobs: $(cat "$tmp/one.txt")"
grep -q $'^bad-vocab\terror' "$tmp/one.txt" && grep -q $'^bad-field\terror' "$tmp/one.txt" &&
  ok "failing jobs recorded" || fail "failing jobs not recorded"
grep -q '"id":"bad-vocab","line":13,"error":"[^"]*jobs.jsonl:13: job \\"bad-vocab\\": .*outside the vocabulary' "$tmp/one.jsonl" ||
  fail "bad-vocab's error does not name the line and the problem: $(grep bad-vocab "$tmp/one.jsonl")"
grep -q 'max_new_tokens must be >= 0' "$tmp/one.jsonl" || fail "bad-field's error does not name the field"
grep -q 'unknown field "note"' "$tmp/stderr" && ok "unknown field warned" || fail "no warning for an unknown field"
grep -q "kvfold: progress: " "$tmp/stderr" && ok "progress lines" || fail "no progress lines"
grep -q "documents/hour" "$tmp/stderr" || fail "no summary table"
python3 - "$tmp/one.jsonl.summary.json" <<'EOF' || fail "summary JSON"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["jobs"] == {"total": 16, "done_before": 0, "run": 16, "ok": 14, "failed": 2}, s["jobs"]
assert s["documents_per_hour"] > 0 and s["tokens_per_s"] > 0 and s["tokens_out"] > 0
assert len(s["ranks"]) == 1 and s["ranks"][0]["peak_rss_bytes"] > 0
assert len(s["failures"]) == 2
EOF
for i in 3 7; do
  want=$("$KVFOLD" generate --model=$MODEL --ids="1,$((i + 3)),$((i * 7 % 250)),42,$((i + 100))" \
    --questions="5,6;$((i + 10))" --max_new_tokens=12 --ignore_eos |
    python3 -c 'import json,sys; print(";".join(",".join(map(str, json.loads(l)["ids"])) for l in sys.stdin))')
  got=$(grep "^doc$i"$'\t' "$tmp/one.txt" | cut -f2)
  [ -n "$want" ] && [ "$want" = "$got" ] && ok "doc$i answers = generate's" ||
    fail "doc$i: run $got, generate $want"
done
want=$("$KVFOLD" generate --model=$MODEL --ids=1,3,5,7,9,11,13,15,17,19,21,23,25,27 --cache=streaming \
  --cache_sinks=2 --cache_slots=6 --max_new_tokens=8 --ignore_eos | python3 -c 'import json,sys; print(",".join(map(str, json.load(sys.stdin)["ids"])))')
got=$(grep "^compressed"$'\t' "$tmp/one.txt" | cut -f2)
[ "$want" = "$got" ] && ok "per-job cache override = generate --cache=streaming" ||
  fail "per-job cache: run $got, generate $want"
grep '"id":"compressed"' "$tmp/one.jsonl" | grep -q '"policy":"streaming"' || fail "per-job policy not reported"

# Limits and empty documents fail their own job only (the demo model has a
# tokenizer, for the text file).
: >"$tmp/empty.txt"
printf '{"id": "long", "document_ids": [1, 2, 3, 4, 5, 6]}\n{"id": "short", "document_ids": [1, 2], "max_new_tokens": 2}\n{"id": "empty", "document_file": "empty.txt"}\n' >"$tmp/limits.jsonl"
"$KVFOLD" run --model=tools/demo/model --input="$tmp/limits.jsonl" --output="$tmp/limits_out.jsonl" \
  --max_document_tokens=4 2>"$tmp/stderr"
grep '"id":"long"' "$tmp/limits_out.jsonl" | grep -q 'the document has 6 tokens, over --max_document_tokens=4' &&
  grep '"id":"short"' "$tmp/limits_out.jsonl" | grep -q '"answers"' &&
  grep '"id":"empty"' "$tmp/limits_out.jsonl" | grep -q '"error"' &&
  ok "too long / empty documents fail alone" || { fail "limits: $(cat "$tmp/limits_out.jsonl" "$tmp/stderr")"; }

# ---- Batch: the same answers with --batch=4 -------------------------------
"$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/batch.jsonl" --batch=4 2>"$tmp/stderr" ||
  { fail "run --batch=4"; cat "$tmp/stderr"; }
answers "$tmp/batch.jsonl" >"$tmp/batch.txt"
cmp -s "$tmp/one.txt" "$tmp/batch.txt" && ok "--batch=4 answers = --batch=1 answers" ||
  { fail "--batch=4 differs"; diff "$tmp/one.txt" "$tmp/batch.txt"; }

# ---- Resume: a rerun skips what is written; a half line is cut ------------
"$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/one.jsonl" 2>"$tmp/stderr" || fail "rerun"
grep -q "16 jobs, 0 to do (16 already in" "$tmp/stderr" && ok "rerun skips every written id" ||
  { fail "rerun did not skip"; cat "$tmp/stderr"; }
head -n 5 "$tmp/one.jsonl" >"$tmp/part.jsonl"
printf '{"id":"doc9","answers":[{"ids":[1,' >>"$tmp/part.jsonl"
"$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/part.jsonl" 2>"$tmp/stderr" || fail "resume"
grep -q "half-written last line" "$tmp/stderr" || fail "no warning about the half line"
answers "$tmp/part.jsonl" >"$tmp/part.txt" && cmp -s "$tmp/one.txt" "$tmp/part.txt" &&
  ok "resumed run = uninterrupted run" || { fail "resume differs"; diff "$tmp/one.txt" "$tmp/part.txt"; }

# ---- Kill: SIGKILL mid-run loses no written line; a rerun completes -------
long="$tmp/long.jsonl"
: >"$long"
for i in $(seq 1 40); do
  echo "{\"id\": \"k$i\", \"document_ids\": [1, $((i + 3)), 77, $((i + 50))], \"question_ids\": [[5], [6], [7]], \"max_new_tokens\": 200, \"ignore_eos\": true}" >>"$long"
done
"$KVFOLD" run --model=$MODEL --input="$long" --output="$tmp/ref.jsonl" --threads=1 2>/dev/null || fail "long run"
"$KVFOLD" run --model=$MODEL --input="$long" --output="$tmp/killed.jsonl" --threads=1 2>/dev/null &
pid=$!
for _ in $(seq 1 600); do
  [ -f "$tmp/killed.jsonl" ] && [ "$(wc -l <"$tmp/killed.jsonl")" -ge 3 ] && break
  sleep 0.01
done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
written=$(wc -l <"$tmp/killed.jsonl")
if [ "$written" -ge 3 ] && [ "$written" -lt 40 ]; then ok "killed after $written of 40 jobs"
else fail "kill test did not interrupt the run ($written lines)"; fi
answers "$tmp/killed.jsonl" >/dev/null && ok "every line written before the kill is whole" ||
  fail "a corrupt line after the kill"
"$KVFOLD" run --model=$MODEL --input="$long" --output="$tmp/killed.jsonl" 2>"$tmp/stderr" || fail "rerun after kill"
answers "$tmp/ref.jsonl" >"$tmp/ref.txt"
answers "$tmp/killed.jsonl" >"$tmp/killed.txt" && cmp -s "$tmp/ref.txt" "$tmp/killed.txt" &&
  ok "killed + rerun = uninterrupted (40 jobs, each once)" || { fail "kill/rerun differs"; diff "$tmp/ref.txt" "$tmp/killed.txt" | head; }

# ---- Ranks: data parallel (2 replicas) and tensor parallel (TP 2) ---------
mpi 2 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/dp.jsonl" 2>"$tmp/stderr" ||
  { fail "mpirun -np 2 run"; cat "$tmp/stderr"; }
answers "$tmp/dp.jsonl" >"$tmp/dp.txt"
cmp -s "$tmp/one.txt" "$tmp/dp.txt" && ok "2 replicas: answers = 1 rank" || { fail "DP differs"; diff "$tmp/one.txt" "$tmp/dp.txt"; }
grep -q '"replica":1' "$tmp/dp.jsonl" && grep -q '"replica":0' "$tmp/dp.jsonl" &&
  ok "both replicas answered jobs" || fail "one replica did all the work"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); assert len(s["ranks"])==2 and s["mesh"]["dp"]==2 and s["bytes_exchanged"]>0, s' \
  "$tmp/dp.jsonl.summary.json" || fail "DP summary"
mpi 2 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/tp.jsonl" --tp=2 2>"$tmp/stderr" ||
  { fail "mpirun -np 2 run --tp=2"; cat "$tmp/stderr"; }
answers "$tmp/tp.jsonl" >"$tmp/tp.txt"
cmp -s "$tmp/one.txt" "$tmp/tp.txt" && ok "TP 2: answers = 1 rank" || { fail "TP differs"; diff "$tmp/one.txt" "$tmp/tp.txt"; }
# Two replicas of two SP ranks: without an anchor, the Full policy's answers
# are one rank's (the compressed job's differ: each rank compresses its block).
mpi 4 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/sp.jsonl" --sp=2 --sp_anchor=0 \
  2>"$tmp/stderr" || { fail "mpirun -np 4 run --sp=2"; cat "$tmp/stderr"; }
answers "$tmp/sp.jsonl" | grep -v '^compressed' >"$tmp/sp.txt"
grep -v '^compressed' "$tmp/one.txt" | cmp -s - "$tmp/sp.txt" && ok "DP 2 x SP 2: answers = 1 rank" ||
  { fail "SP differs"; grep -v '^compressed' "$tmp/one.txt" | diff - "$tmp/sp.txt"; }
python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
done = [l for l in lines if "answers" in l]
assert done and all(len(l["sp_exchange"]["bytes_per_rank"]) == 2 for l in done), lines[0]
s = json.load(open(sys.argv[1] + ".summary.json"))
assert s["mesh"]["sp"] == 2 and s["mesh"]["dp"] == 2, s["mesh"]
' "$tmp/sp.jsonl" && ok "SP 2: exchange bytes per rank in every result, mesh in the summary" ||
  fail "SP result lines or summary"

# A rank that dies: the job ends non-zero (no hang); a rerun completes it.
start=$(date +%s)
mpi 2 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/fault.jsonl" --fault=1:kill \
  >/dev/null 2>"$tmp/stderr"
rc=$?
[ $rc -ne 0 ] && [ $(($(date +%s) - start)) -lt 60 ] && ok "a killed rank ends the run (rc=$rc)" ||
  fail "a killed rank: rc=$rc after $(($(date +%s) - start)) s"
mpi 2 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/fault.jsonl" 2>"$tmp/stderr" ||
  fail "rerun after a dead rank"
answers "$tmp/fault.jsonl" >"$tmp/fault.txt" && cmp -s "$tmp/one.txt" "$tmp/fault.txt" &&
  ok "rerun after a dead rank = 1 rank" || fail "rerun after a dead rank differs"

# ---- Bad input: refused before any job, naming what and where -------------
expect_error() {
  local pattern="$1"
  shift
  "$KVFOLD" run --model=$MODEL "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 1 ] || ! grep -q -- "$pattern" "$tmp/err"; then
    fail "run $* -> rc=$rc, stderr: $(cat "$tmp/err")"
  else
    ok "run $* -> $(head -n1 "$tmp/err")"
  fi
}
printf '{"id": "a", "document_ids": [1]}\n{"id": "b", "document_ids": [1]\n{"id": "a", "document_ids": [2]}\n' >"$tmp/bad.jsonl"
expect_error "bad.jsonl:2: not valid JSON" --input="$tmp/bad.jsonl" --output="$tmp/bad_out.jsonl"
expect_error 'bad.jsonl:3: id "a" is already used on line 1' --input="$tmp/bad.jsonl" --output="$tmp/bad_out.jsonl"
[ ! -s "$tmp/bad_out.jsonl" ] || fail "a refused run wrote results"
expect_error "/nonexistent/jobs.jsonl" --input=/nonexistent/jobs.jsonl --output="$tmp/x.jsonl"
expect_error "/nonexistent/dir/out.jsonl: cannot open it for writing" --input="$jobs" --output=/nonexistent/dir/out.jsonl
expect_error "--output is required" --input="$jobs"
expect_error "--output must not be the --input" --input="$jobs" --output="$jobs"
expect_error "--text: run takes its documents" --input="$jobs" --output="$tmp/x.jsonl" --text=hi
expect_error "world size 1 is not divisible by --tp=2" --input="$jobs" --output="$tmp/x.jsonl" --tp=2
echo '{"id": "a"}' >"$tmp/notours.jsonl"; echo 'plain text' >>"$tmp/notours.jsonl"
expect_error "notours.jsonl:2: not a kvfold result line" --input="$jobs" --output="$tmp/notours.jsonl"
echo '{"id": "t", "document": "some text"}' >"$tmp/text.jsonl"
expect_error "jobs with text need the model's tokenizer" --input="$tmp/text.jsonl" --output="$tmp/x.jsonl"
mpi 3 "$KVFOLD" run --model=$MODEL --input="$jobs" --output="$tmp/x3.jsonl" --tp=2 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc -ne 0 ] && grep -q "world size 3 is not divisible by --tp=2" "$tmp/err" && [ ! -s "$tmp/x3.jsonl" ] &&
  ok "mpirun -np 3 --tp=2 refused" || fail "mpirun -np 3 --tp=2: rc=$rc $(cat "$tmp/err")"

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
