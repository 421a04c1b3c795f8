#!/usr/bin/env bash
# kvfold eval end to end on the built-in model (tools/model): its answers on
# a small task file equal transformers' greedy answers (golden, made by
# tools/train/make_eval_golden.py), the accuracy JSON counts them per task
# and length, and bad input (unknown task, a task file of another
# tokenizer, a length past the model's limit, malformed lines) is refused
# with a message naming it.
set -u
KVFOLD="$1"
MODEL=tools/model
TASKS=tests/golden/eval/tasks.jsonl
GOLDEN=tests/golden/eval/golden.jsonl
tmp="${TEST_TMPDIR:-$(mktemp -d)}"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }

# ---- Predictions equal transformers', accuracy counted right -------------
if "$KVFOLD" eval --model=$MODEL --tasks=$TASKS --output="$tmp/eval.json" \
    --predictions="$tmp/pred.jsonl" --threads=2 2>"$tmp/eval.err"; then
  if python3 - "$tmp/pred.jsonl" "$GOLDEN" "$tmp/eval.json" "$TASKS" <<'EOF2'
import collections, json, sys
pred = {j["id"]: j for j in map(json.loads, open(sys.argv[1]))}
gold = {j["id"]: j for j in map(json.loads, open(sys.argv[2]))}
res = json.load(open(sys.argv[3]))
samples = [json.loads(l) for l in open(sys.argv[4])][1:]
assert set(pred) == set(gold) == {s["id"] for s in samples}, "ids differ"
bad = [i for i in gold if pred[i]["prediction"] != gold[i]["prediction"]
       or pred[i]["correct"] != gold[i]["correct"] or pred[i]["prompt_tokens"] != gold[i]["prompt_tokens"]]
assert not bad, f"differ from transformers: {[(i, pred[i]['prediction'], gold[i]['prediction']) for i in bad]}"
want = collections.Counter()
total = collections.Counter()
for s in samples:
    total[(s["task"], s["length"])] += 1
    want[(s["task"], s["length"])] += gold[s["id"]]["correct"]
got = {(g["task"], g["length"]): g for g in res["groups"]}
assert set(got) == set(total), "groups differ"
for k in total:
    assert got[k]["samples"] == total[k] and got[k]["correct"] == want[k], (k, got[k])
assert res["correct"] == sum(want.values()) and res["samples"] == len(samples)
assert res["cache_policy"] == "full"
print(f"{len(gold)} answers equal transformers'; accuracy {res['accuracy']:.3f}")
EOF2
  then ok "eval == transformers"; else fail "eval predictions or accuracy"; fi
else
  fail "eval exited non-zero: $(tail -3 "$tmp/eval.err")"
fi

# ---- --batch=4 and 2 tensor-parallel ranks give the same answers ----------
source parallel/mpirun_env.sh
preds() { python3 -c "import json,sys; [print(j['id'], j['prediction']) for j in map(json.loads, open(sys.argv[1]))]" "$1"; }
"$KVFOLD" eval --model=$MODEL --tasks=$TASKS --eval_lengths=1024 --predictions="$tmp/b1.jsonl" \
  --threads=1 >/dev/null 2>&1
"$KVFOLD" eval --model=$MODEL --tasks=$TASKS --eval_lengths=1024 --predictions="$tmp/b4.jsonl" \
  --threads=1 --batch=4 >/dev/null 2>&1
if [ -s "$tmp/b1.jsonl" ] && [ "$(preds "$tmp/b1.jsonl")" = "$(preds "$tmp/b4.jsonl")" ]; then
  ok "--batch=4 == --batch=1"
else
  fail "--batch=4 answers differ"
fi
# Two ranks of one replica give one rank's answers, and the JSON names the
# degree: TP = 2, and SP = 2 with the Full cache, no anchor and whole passing
# blocks (exact).
two_ranks() {  # two_ranks NAME DEGREE_KEY FLAGS...
  local name="$1" key="$2"
  shift 2
  mpi 2 "$KVFOLD" eval --model=$MODEL --tasks=$TASKS --eval_lengths=1024 "$@" \
    --predictions="$tmp/$name.jsonl" --threads=1 >"$tmp/$name.json" 2>"$tmp/$name.err"
  if [ "$(preds "$tmp/b1.jsonl")" = "$(preds "$tmp/$name.jsonl")" ] &&
     grep -q "\"$key\": 2" "$tmp/$name.json"; then
    ok "--$key=2 == 1 rank"
  else
    fail "--$key=2: $(tail -3 "$tmp/$name.err")"
  fi
}
two_ranks tp2 tp --tp=2
two_ranks sp2 sp --sp=2 --sp_anchor=0
if mpi 2 "$KVFOLD" eval --model=$MODEL --tasks=$TASKS --threads=1 >/dev/null 2>"$tmp/dp.err"; then
  fail "2 replicas accepted"
elif grep -q "eval runs one model replica" "$tmp/dp.err"; then
  ok "2 replicas refused"
else
  fail "2 replicas: $(head -3 "$tmp/dp.err")"
fi

# ---- A compressed cache: JSON says so, compression > 1 -------------------
if "$KVFOLD" eval --model=$MODEL --tasks=$TASKS --cache=h2o --cache_slots=64 \
    --eval_tasks=passkey,kv --per_group=1 --threads=2 >"$tmp/h2o.json" 2>/dev/null &&
   python3 -c "
import json, sys
r = json.load(open('$tmp/h2o.json'))
assert r['cache_policy'] == 'h2o' and r['samples'] == 4, r
assert all(g['mean_compression_ratio'] > 4 for g in r['groups']), r['groups']
assert set(r['accuracy_by_task']) == {'passkey', 'kv'}
"; then ok "h2o eval, filters"; else fail "h2o eval or --eval_tasks/--per_group"; fi

# ---- Bad input -------------------------------------------------------------
expect_error() {  # NAME PATTERN ARGS...
  local name="$1" pattern="$2"
  shift 2
  if "$KVFOLD" eval "$@" >"$tmp/out" 2>"$tmp/err"; then
    fail "$name: exit 0"
  elif ! grep -q -- "$pattern" "$tmp/err"; then
    fail "$name: no \"$pattern\" in: $(cat "$tmp/err")"
  elif [ -s "$tmp/out" ]; then
    fail "$name: wrote results"
  else
    ok "$name"
  fi
}
sed '2s/"task": "[a-z_]*"/"task": "needle"/' $TASKS >"$tmp/unknown.jsonl"
expect_error "unknown task" 'unknown.jsonl:2: unknown task "needle"' \
  --model=$MODEL --tasks="$tmp/unknown.jsonl"
expect_error "unknown --eval_tasks" 'unknown task "needle"' \
  --model=$MODEL --tasks=$TASKS --eval_tasks=needle
expect_error "no such length" "no sample matches" \
  --model=$MODEL --tasks=$TASKS --eval_lengths=999
expect_error "bad --eval_lengths" "not a positive integer" \
  --model=$MODEL --tasks=$TASKS --eval_lengths=8k
# Another tokenizer: the test checkpoint with the 256-piece tokenizer.
mkdir -p "$tmp/other"
cp tests/golden/llama3_f32/config.json tests/golden/llama3_f32/model.safetensors "$tmp/other/"
cp tests/golden/tokenizers/tiny256_sentencepiece/tokenizer.json "$tmp/other/"
expect_error "other tokenizer" "was made for another tokenizer" --model="$tmp/other" --tasks=$TASKS
# The built-in model with a shorter limit than the file's 2048-token samples.
mkdir -p "$tmp/short"
for f in $MODEL/*; do ln -sf "$PWD/$f" "$tmp/short/"; done
rm "$tmp/short/config.json"
sed 's/"max_position_embeddings": [0-9]*/"max_position_embeddings": 1500/' $MODEL/config.json \
  >"$tmp/short/config.json"
expect_error "past the model's limit" "beyond the model's max_position_embeddings of 1500" \
  --model="$tmp/short" --tasks=$TASKS
head -1 $TASKS >"$tmp/header_only.jsonl"
expect_error "no samples" "no samples after the header" --model=$MODEL --tasks="$tmp/header_only.jsonl"
tail -n +2 $TASKS >"$tmp/no_header.jsonl"
expect_error "no header" "not a kvfold task file" --model=$MODEL --tasks="$tmp/no_header.jsonl"
{ head -2 $TASKS; echo '{"id": "broken"'; } >"$tmp/broken.jsonl"
expect_error "malformed line" "broken.jsonl:3: not valid JSON" --model=$MODEL --tasks="$tmp/broken.jsonl"
expect_error "missing file" "nope.jsonl" --model=$MODEL --tasks="$tmp/nope.jsonl"
expect_error "no --tasks" "--tasks is required" --model=$MODEL

if [ $failures -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all eval checks passed"
