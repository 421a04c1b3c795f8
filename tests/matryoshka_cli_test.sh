#!/usr/bin/env bash
# MatryoshkaKV from the command line: `kvfold calibrate --method=pca` writes a
# projection file that score/generate load with --feature_budget; at budget 1
# the results are the unprojected model's; under mpirun the PCA of a
# tensor-parallel model (each rank its KV heads) and the projected model at
# TP = 2 agree with one rank. Bad files and impossible flags: one clear error
# line and exit 1.
set -u -o pipefail
KVFOLD="$1"
source parallel/mpirun_env.sh
T="${TEST_TMPDIR:-$(mktemp -d)}"
MODEL=tests/golden/lococo/model
DATA=tests/golden/lococo/learn/calib.ids
DOC=$(head -n1 tests/golden/lococo/learn/heldout.ids)
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

expect_error() {  # PATTERN ARGS...: exit 1 and a one-line message
  local pattern="$1"
  shift
  "$KVFOLD" "$@" >"$T/out" 2>"$T/err"
  local rc=$?
  if [ "$rc" -ne 1 ] || ! grep -q -- "$pattern" "$T/err" || [ "$(grep -c . "$T/err")" -ne 1 ]; then
    fail "kvfold $* -> rc=$rc, stderr:"; cat "$T/err"
  else
    echo "ok: $(head -n1 "$T/err")"
  fi
}
# mean_nll of a score run's JSON
nll() { python3 -c 'import json,sys; print(json.load(sys.stdin)["mean_nll"])'; }
close() {  # A B TOL NAME
  python3 -c "import sys; a,b,t=map(float,sys.argv[1:4]); sys.exit(0 if abs(a-b)<=t else 1)" \
    "$1" "$2" "$3" && echo "ok: $4 ($1 vs $2)" || fail "$4: $1 vs $2"
}

# --- calibrate: PCA with uniform allocations.
"$KVFOLD" calibrate --model=$MODEL --documents_file=$DATA --output="$T/pca.safetensors" \
  --rank_budgets=1,0.5,0.25 >"$T/cal.json" 2>"$T/cal.err" || { fail "calibrate"; cat "$T/cal.err"; }
python3 - "$T/cal.json" <<'PY' || fail "calibrate JSON"
import json, sys
j = json.load(open(sys.argv[1]))
kept = [a["variance_kept"] for a in j["allocations"]]
assert [a["rank"] for a in j["allocations"]] == [16, 8, 4], j
assert kept[0] > 0.999999 and 1 > kept[1] > kept[2] > 0, kept  # PCA: more rank, more variance
assert j["tokens"] > 1000, j
print("ok: calibrate", j["allocations"])
PY
grep -q "calibrate: .* sequences" "$T/cal.err" || fail "calibrate prints no progress"

plain=$("$KVFOLD" score --model=$MODEL --ids="$DOC" | nll)
full=$("$KVFOLD" score --model=$MODEL --ids="$DOC" --compressor="$T/pca.safetensors" --feature_budget=1 | nll)
close "$plain" "$full" 1e-5 "budget 1 = no projection"
half=$("$KVFOLD" score --model=$MODEL --ids="$DOC" --compressor="$T/pca.safetensors" --feature_budget=0.5 \
       --cache=snapkv --cache_slots=64 --cache_window=8 --prefill_chunk=64 | nll)
python3 -c "import sys; sys.exit(0 if sys.argv[1] != sys.argv[2] else 1)" "$plain" "$half" ||
  fail "budget 0.5 + snapkv changed nothing"
"$KVFOLD" score --model=$MODEL --ids="$DOC" --compressor="$T/pca.safetensors" --feature_budget=0.25 \
  >"$T/q.json" || fail "score at budget 0.25"
"$KVFOLD" score --model=$MODEL --ids="$DOC" >"$T/p.json"
python3 - "$T/p.json" "$T/q.json" <<'PY' || fail "cache bytes at budget 0.25"
import json, sys
p, q = (json.load(open(f))["cache"]["bytes"] for f in sys.argv[1:])
assert q * 4 == p, (p, q)
print("ok: a quarter of the features, a quarter of the bytes:", p, q)
PY

# --- kvfold's PCA (LAPACK, C++) and the PyTorch reference's PCA
# (tools/calibrate/matryoshka.py pca_init, tests/golden/matryoshka/learn/) of
# the built-in model over the same data give the same projections: the same
# held-out NLL at every budget.
LEARN=tests/golden/matryoshka/learn
"$KVFOLD" calibrate --model=tools/model --documents_file=$LEARN/calib.ids --output="$T/bpca.safetensors" \
  --rank_budgets=1,0.75,0.5,0.375,0.25 --rank_granularity=4 >/dev/null 2>&1 || fail "calibrate tools/model"
HELD=$(head -n1 $LEARN/heldout.ids)
for b in 0.75 0.375 0.25; do
  a=$("$KVFOLD" score --model=tools/model --ids="$HELD" --compressor="$T/bpca.safetensors" --feature_budget=$b | nll)
  t=$("$KVFOLD" score --model=tools/model --ids="$HELD" --compressor=$LEARN/pca.safetensors --feature_budget=$b | nll)
  close "$a" "$t" 1e-5 "C++ PCA = PyTorch PCA at budget $b"
done

# --- Under mpirun: TP = 2 (one KV head per rank) calibrates the same
# projections (up to f32 reduction order) and scores the same.
mpi 2 "$KVFOLD" calibrate --model=$MODEL --documents_file=$DATA --output="$T/pca_tp2.safetensors" \
  --rank_budgets=1,0.5,0.25 --tp=2 --threads=1 >"$T/cal2.json" 2>"$T/cal2.err" ||
  { fail "calibrate TP=2"; cat "$T/cal2.err"; }
a=$("$KVFOLD" score --model=$MODEL --ids="$DOC" --compressor="$T/pca.safetensors" --feature_budget=0.25 | nll)
b=$("$KVFOLD" score --model=$MODEL --ids="$DOC" --compressor="$T/pca_tp2.safetensors" --feature_budget=0.25 | nll)
close "$a" "$b" 1e-4 "PCA at TP=2 = TP=1"
c=$(mpi 2 "$KVFOLD" score --model=$MODEL --ids="$DOC" --compressor="$T/pca.safetensors" \
    --feature_budget=0.25 --tp=2 --threads=1 | nll)
close "$a" "$c" 1e-4 "projected score at TP=2 = TP=1"

# --- Bad input.
expect_error "needs MatryoshkaKV projections" score --model=$MODEL --ids=1,2 --feature_budget=0.5
expect_error "feature_budget must be in (0, 1]" score --model=$MODEL --ids=1,2 --feature_budget=1.5
expect_error "no rank allocation for feature budget 0.3; the compressor stores 1, 0.5, 0.25" \
  score --model=$MODEL --ids=1,2 --compressor="$T/pca.safetensors" --feature_budget=0.3
expect_error "choose one with --feature_budget (1, 0.5, 0.25)" \
  score --model=$MODEL --ids=1,2 --compressor="$T/pca.safetensors"
expect_error "are both matryoshka files" score --model=$MODEL --ids=1,2 \
  --compressor="$T/pca.safetensors, $T/pca_tp2.safetensors" --feature_budget=0.5
echo 'slots: 8 streaming { reindex_positions: true }' >"$T/reindex.txt"
expect_error "reindex_positions re-rotates cached keys" score --model=$MODEL --ids=1,2 \
  --compressor="$T/pca.safetensors" --feature_budget=0.5 --cache_config="$T/reindex.txt"
expect_error "was calibrated for the model" score --model=tests/golden/mistral_gqa_f32 --ids=1,2 \
  --compressor="$T/pca.safetensors" --feature_budget=0.5
expect_error "kvfold calibrate does pca" calibrate --model=$MODEL --documents_file=$DATA --output="$T/x" --method=train
expect_error "output=FILE is required" calibrate --model=$MODEL --documents_file=$DATA
expect_error "strictly descending" calibrate --model=$MODEL --documents_file=$DATA --output="$T/x" --rank_budgets=0.5,0.7
expect_error "less than one step of --rank_granularity 8" calibrate --model=$MODEL --documents_file=$DATA \
  --output="$T/x" --rank_budgets=1,0.25 --rank_granularity=8
expect_error "calibrate runs with the full cache" calibrate --model=$MODEL --documents_file=$DATA \
  --output="$T/x" --cache=h2o --cache_slots=8
[ -e "$T/x" ] && fail "a failed calibrate left $T/x"

# Damaged projection files: each edit of a good file names what is wrong.
damage() {  # NAME PYTHON-EDIT: writes $T/NAME.safetensors from pca.safetensors
  python3 - "$T/pca.safetensors" "$T/$1.safetensors" "$2" <<'PY'
import json, struct, sys
src, dst, edit = sys.argv[1:4]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head, data = json.loads(raw[8:8 + n]), bytearray(raw[8 + n:])
meta = head["__metadata__"]
def tensor(name):  # a tensor's bytes range in data
    return head[name]["data_offsets"]
exec(edit)
text = json.dumps(head).encode()
open(dst, "wb").write(struct.pack("<Q", len(text)) + text + bytes(data))
PY
}
damage rank 'meta["ranks.1"] = meta["ranks.1"].replace("8", "17", 1)'
expect_error "key rank of layer 0 KV head 0 is 17, not in \[1, head_dim 16\]" score --model=$MODEL --ids=1,2 \
  --compressor="$T/rank.safetensors" --feature_budget=0.5
damage missing 'del meta["ranks.2"]'
expect_error 'metadata has no "ranks.2"' score --model=$MODEL --ids=1,2 --compressor="$T/missing.safetensors" --feature_budget=0.5
damage order 'meta["rank_budgets"] = "1,0.5,0.5"'
expect_error "strictly descending" score --model=$MODEL --ids=1,2 --compressor="$T/order.safetensors" --feature_budget=0.5
damage ortho 'b = tensor("matryoshka.layers.1.value_basis")[0]; data[b:b+4] = struct.pack("<f", 3.0)'
expect_error "layer 1 KV head 0: the value basis is not orthonormal" score --model=$MODEL --ids=1,2 \
  --compressor="$T/ortho.safetensors" --feature_budget=0.5
damage nan 'b = tensor("matryoshka.layers.0.key_mean")[0]; data[b:b+4] = struct.pack("<f", float("nan"))'
expect_error "layer 0 KV head 0: holds a non-finite value" score --model=$MODEL --ids=1,2 \
  --compressor="$T/nan.safetensors" --feature_budget=0.5
damage layers 'meta["model.num_hidden_layers"] = "4000"'
expect_error "holds 8 tensors; 4000 layers of MatryoshkaKV projections have 16000" score \
  --model=$MODEL --ids=1,2 --compressor="$T/layers.safetensors" --feature_budget=0.5
damage method 'meta["method"] = "svd"'
expect_error 'method "svd" is not one kvfold learns' score --model=$MODEL --ids=1,2 --compressor="$T/method.safetensors"
damage shape 'head["matryoshka.layers.0.key_mean"]["shape"] = [16, 2]'
expect_error "matryoshka.layers.0.key_mean" score --model=$MODEL --ids=1,2 --compressor="$T/shape.safetensors" --feature_budget=0.5

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
