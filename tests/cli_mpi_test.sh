#!/usr/bin/env bash
# kvfold under mpirun (CPU, MPI, oversubscribed): tensor and data
# parallelism give the same answers as one rank; start-up errors are reported
# once by rank 0 with every rank exiting non-zero; a rank that fails after
# start-up (error, exception, killed) or has a bad checkpoint ends the whole
# job non-zero, quickly, with a message naming it.
set -u -o pipefail
KVFOLD="$1"
source parallel/mpirun_env.sh
T="$TMPDIR"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# document, question and ids of every answer line (timings differ per run)
answers() { python3 -c '
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    print(j.get("document"), j.get("question"), j["ids"])'; }

# --- Tensor parallelism: the same greedy answers as one rank.
for model in llama3_f32 mistral_gqa_f32 qwen2_bias_tied_bf16; do
  for cache in "" "--cache=h2o --cache_slots=16" "--cache=snapkv --cache_slots=16 --cache_window=4"; do
    args=(generate --model="tests/golden/$model" --ids=1,17,42,99,7,128,5,9,33,250,3,77,21,64,8,19,140,2,6,90
          --questions="3,4;5,6,7" --max_new_tokens=12 --threads=1 --prefill_chunk=8 $cache)
    "$KVFOLD" "${args[@]}" | answers >"$T/one" || fail "$model $cache: one rank"
    [ "$(wc -l <"$T/one")" -eq 2 ] || fail "$model $cache: $(wc -l <"$T/one") answers, want 2"
    for tp in 2 4; do
      mpi "$tp" "$KVFOLD" "${args[@]}" --tp="$tp" | answers >"$T/tp" || fail "$model TP=$tp $cache"
      if cmp -s "$T/one" "$T/tp"; then echo "ok: $model TP=$tp $cache"; else
        fail "$model TP=$tp $cache differs"; diff "$T/one" "$T/tp"; fi
    done
  done
done

# --- Sequence parallelism: with the Full policy and no anchor (passing
# blocks carry every earlier block), the same greedy answers as one rank, on
# SP alone, on a TP x SP mesh and with the question observing the blocks
# (question-aware; nothing to compress, so nothing changes).
for model in llama3_f32 mistral_gqa_f32; do
  args=(generate --model="tests/golden/$model" --ids=1,17,42,99,7,128,5,9,33,250,3,77,21,64,8,19,140,2,6,90
        --questions="3,4;5,6,7" --max_new_tokens=12 --threads=1 --prefill_chunk=8)
  "$KVFOLD" "${args[@]}" | answers >"$T/one" || fail "$model: one rank"
  for layout in "2 --sp=2" "4 --sp=4" "4 --sp=2 --tp=2" "2 --sp=2 --question_mode=aware"; do
    set -- $layout
    mpi "$1" "$KVFOLD" "${args[@]}" "${@:2}" --sp_anchor=0 | answers >"$T/sp" || fail "$model $layout"
    if cmp -s "$T/one" "$T/sp"; then echo "ok: $model -np $layout: the same answers as one rank"; else
      fail "$model -np $layout differs"; diff "$T/one" "$T/sp"; fi
  done
done
# With compression (default anchor and passing blocks; H2O, and SnapKV with
# the question observing): two runs agree, and every answer reports each SP
# rank's exchanged bytes.
for cache in "--cache=h2o" "--cache=snapkv --cache_window=4 --question_mode=aware"; do
args=(generate --model=tests/golden/llama3_f32 --ids="$(seq -s, 3 90)" --questions="3,4;5"
      --max_new_tokens=8 --threads=1 --prefill_chunk=8 $cache --cache_slots=12 --sp=2)
mpi 2 "$KVFOLD" "${args[@]}" >"$T/sp1" || fail "SP=2 $cache"
mpi 2 "$KVFOLD" "${args[@]}" >"$T/sp2" || fail "SP=2 $cache again"
python3 - "$T/sp1" "$T/sp2" <<'PY' || fail "SP=2 $cache: not deterministic or no exchange stats"
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
assert [x["ids"] for x in a] == [y["ids"] for y in b], "answers differ between runs"
for x in a:
    ex = x["sp_exchange"]
    assert len(ex["bytes_per_rank"]) == 2 and ex["bytes"] == sum(ex["bytes_per_rank"]) > 0, ex
print("ok: SP=2: deterministic;", [x["sp_exchange"] for x in a])
PY
done
# bench_sp: per-rank blocks cover the document; bytes are counted.
mpi 2 "$KVFOLD" bench_sp --sp_doc_lengths=600 --bench_layers=2 --cache=h2o --cache_slots=64 \
  --prefill_chunk=128 --threads=1 >"$T/bsp" || fail "bench_sp"
python3 - "$T/bsp" <<'PY' || fail "bench_sp JSON"
import json, sys
j = json.loads(open(sys.argv[1]).readline())
assert j["sp"] == 2 and len(j["ranks"]) == 2 and j["bytes_exchanged"] > 0, j
assert sum(r["block_tokens"] for r in j["ranks"]) == 600 and j["anchor_tokens"] == 64, j
print("ok: bench_sp SP=2:", j["bytes_exchanged"], "bytes, anchor", j["anchor_tokens"])
PY
# A document too short for the ranks fails with a clear message.
mpi 2 "$KVFOLD" generate --model=tests/golden/llama3_f32 --ids=5,6 --sp=2 --threads=1 \
  >"$T/out" 2>"$T/err"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "needs a document of at least 3 tokens" "$T/err"; then
  echo "ok: a 2-token document on SP=2: rc=$rc: $(grep -m1 'kvfold: error' "$T/err")"
else
  fail "short document on SP=2: rc=$rc"; cat "$T/err"
fi

# score: the same log-probabilities (f32 reduction order aside).
"$KVFOLD" score --model=tests/golden/llama3_f32 --ids=1,17,42,99,7,128,5,9 --threads=1 >"$T/s1"
mpi 2 "$KVFOLD" score --model=tests/golden/llama3_f32 --ids=1,17,42,99,7,128,5,9 --threads=1 \
  --tp=2 >"$T/s2" || fail "score TP=2"
python3 - "$T/s1" "$T/s2" <<'PY' || fail "score TP=2 differs"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
d = max(abs(x - y) for x, y in zip(a["logprobs"], b["logprobs"]))
print("ok: score TP=2, max |logprob difference|", d)
sys.exit(0 if d < 1e-4 and len(a["logprobs"]) == len(b["logprobs"]) else 1)
PY

# bench_tp: the counted traffic of every step equals the model's plan.
mpi 2 "$KVFOLD" bench_tp --shape=tiny-256 --bench_layers=2 --prefill_tokens=16 \
  --decode_tokens=3 --threads=1 >"$T/bench" || fail "bench_tp"
python3 - "$T/bench" <<'PY' || fail "bench_tp: counted traffic differs from the plan"
import json, sys
j = json.load(open(sys.argv[1]))
ok = j["tp"] == 2 and j["prefill"]["plan_matches_count"] and j["decode_step"]["plan_matches_count"]
print("ok: bench_tp TP=2 counted == planned, decode all-reduce bytes per step",
      j["decode_step"]["planned"]["all_reduce_bytes"])
sys.exit(0 if ok else 1)
PY

# --- Data parallelism: per-document results in input order as one rank's.
printf '1,2,3,4\n5 6 7 8 9\n\n10,11,12\n13,14\n200,201,202,203,204,205\n7,7,7\n' >"$T/docs"
args=(generate --model=tests/golden/mistral_gqa_f32 --documents_file="$T/docs"
      --questions="3,4;5" --max_new_tokens=6 --threads=1 --cache=h2o --cache_slots=4)
"$KVFOLD" "${args[@]}" | answers >"$T/dp1"
[ "$(wc -l <"$T/dp1")" -eq 12 ] || fail "documents_file: $(wc -l <"$T/dp1") answers, want 12"
for layout in "2" "3" "4 --tp=2"; do
  set -- $layout
  mpi "$1" "$KVFOLD" "${args[@]}" "${@:2}" | answers >"$T/dp" || fail "DP $layout"
  if cmp -s "$T/dp1" "$T/dp"; then echo "ok: -np $layout: the same results as one rank"; else
    fail "-np $layout differs"; diff "$T/dp1" "$T/dp"; fi
done

# A long document on replica 1 while replica 0 (TP 2) waits for its result:
# the writer's TP partner waits with --job_timeout, not the 1 s collective one.
python3 -c "
print('1,2,3')
print(','.join(str(i * 7 % 250) for i in range(200000)))
print('4,5,6')" >"$T/long"
mpi 4 "$KVFOLD" generate --model=tests/golden/mistral_gqa_f32 --documents_file="$T/long" \
  --max_new_tokens=2 --threads=1 --tp=2 --collective_timeout=1 --cache=streaming \
  --cache_slots=64 | answers >"$T/longout" || fail "DP2 x TP2 with a long document"
[ "$(wc -l <"$T/longout")" -eq 3 ] && echo "ok: DP2 x TP2, a 200K-token document on replica 1" ||
  fail "DP2 x TP2 long document: $(wc -l <"$T/longout") answers"

# --- Start-up errors: rank 0 says it once, every rank exits non-zero.
startup_error() {  # name, expected message, ranks, flags...
  local name="$1" want="$2" n="$3"
  shift 3
  mpi "$n" "$KVFOLD" generate --ids=1,2,3 --max_new_tokens=2 --threads=1 "$@" \
    >"$T/out" 2>"$T/err"
  local rc=$? count
  count=$(grep -c "kvfold: error" "$T/err")
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] && grep -q "$want" "$T/err" &&
     [ "$count" -eq 1 ]; then
    echo "ok: $name: rc=$rc: $(grep -m1 'kvfold: error' "$T/err")"
  else
    fail "$name: rc=$rc, $count error line(s)"; cat "$T/err"
  fi
}
startup_error "heads not divisible" "tp=4 does not divide the model's 2 attention heads" 4 \
  --model=tests/golden/llama_f16 --tp=4
startup_error "world not divisible" "world size 3 is not divisible by --tp=2" 3 \
  --model=tests/golden/llama3_f32 --tp=2
startup_error "heads not divisible by 3" "tp=3 does not divide the model's 4 attention heads" 3 \
  --model=tests/golden/llama3_f32 --tp=3
startup_error "world not divisible by SP" "world size 2 is not divisible by --tp=1 x --sp=4" 2 \
  --model=tests/golden/llama3_f32 --sp=4
startup_error "passing blocks larger than the cache" "exceeds the cache of 16 slots" 2 \
  --model=tests/golden/llama3_f32 --sp=2 --cache=h2o --cache_slots=16 --sp_passing_slots=20
startup_error "missing model" "nowhere/config.json: cannot open" 2 --model="$T/nowhere" --tp=2
# One rank with a truncated checkpoint (MPMD: the other gets a good one).
mkdir -p "$T/bad"
cp tests/golden/llama3_f32/config.json "$T/bad/"
head -c 1000 tests/golden/llama3_f32/model.safetensors >"$T/bad/model.safetensors"
mpi 1 "$KVFOLD" generate --ids=1,2 --threads=1 --tp=2 --model=tests/golden/llama3_f32 : \
  -np 1 "$KVFOLD" generate --ids=1,2 --threads=1 --tp=2 --model="$T/bad" >"$T/out" 2>"$T/err"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q "rank 1 of 2 failed at start-up: .*truncated" "$T/err"; then
  echo "ok: bad file on rank 1: rc=$rc: $(grep -m1 'kvfold: error' "$T/err")"
else
  fail "bad file on rank 1: rc=$rc"; cat "$T/err"
fi

# --- A rank failing after start-up ends the job within the timeout.
for fault in error throw kill; do
  start=$(date +%s)
  mpi 2 "$KVFOLD" generate --model=tests/golden/llama3_f32 --ids=1,2,3 --max_new_tokens=4 \
    --threads=1 --tp=2 --collective_timeout=20 --fault=1:"$fault" >"$T/out" 2>"$T/err"
  rc=$?
  elapsed=$(($(date +%s) - start))
  case "$fault" in
    kill) want="rank 1 .*exited on signal 9" ;;
    throw) want="rank 1 of 2: unexpected exception: fault injected" ;;
    *) want="rank 1 of 2: fault injected" ;;
  esac
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$elapsed" -lt 20 ] && grep -q "$want" "$T/err"; then
    echo "ok: rank 1 $fault: rc=$rc after ${elapsed}s"
  else
    fail "rank 1 $fault: rc=$rc after ${elapsed}s"; cat "$T/err"
  fi
done

echo "cli_mpi_test: $failures failure(s)"
[ "$failures" -eq 0 ]
