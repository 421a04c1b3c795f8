#!/usr/bin/env bash
# kvfold demo (README command 1) as a user runs it: started without mpirun,
# it starts 2 ranks itself, answers every bundled job and prints the
# answers and the summary.
set -u
KVFOLD="$1"
export TMPDIR="${TEST_TMPDIR:-$(mktemp -d)}"
# Inside Bazel's sandbox each test needs its own shared-memory directory
# (parallel/mpirun_env.sh); a user's machine needs nothing.
export OMPI_MCA_btl_vader_backing_directory="$TMPDIR"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

timeout -k 5 600 "$KVFOLD" demo --output="$TMPDIR/answers.jsonl" >"$TMPDIR/out" 2>"$TMPDIR/err"
rc=$?
cat "$TMPDIR/out" "$TMPDIR/err"
[ $rc -eq 0 ] || fail "demo exited $rc"
jobs=$(grep -c . tools/demo/jobs.jsonl)
[ "$(grep -c '^== ' "$TMPDIR/out")" -eq "$jobs" ] || fail "want $jobs answered jobs printed"
grep -q "^== [^ ]*: failed: " "$TMPDIR/out" && fail "a demo job failed"
grep -q "kvfold run: $jobs jobs: $jobs ok, 0 failed" "$TMPDIR/err" || fail "no summary table"
grep -q "^demo: [0-9]* of 13 answers as expected" "$TMPDIR/out" || fail "no expected-answer count"
python3 - "$TMPDIR/answers.jsonl" "$jobs" <<'PY' || fail "answers file"
import json, sys
layers = json.load(open("tools/model/config.json"))["num_hidden_layers"]
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == int(sys.argv[2]), len(lines)
assert {l["replica"] for l in lines} == {0, 1}, "both ranks should answer jobs"
for l in lines:
    assert "error" not in l, l
    # A fixed-size cache: never more slots than the budget, whatever the length.
    assert l["cache"]["slots_held"] <= layers * 256, l["cache"]
s = json.load(open(sys.argv[1] + ".summary.json"))
assert s["mesh"]["world"] == 2 and s["jobs"]["ok"] == int(sys.argv[2]), s
PY
echo "$failures failure(s)"
[ "$failures" -eq 0 ]
