#!/usr/bin/env bash
# The kvfold binary end to end: good runs print JSON; bad input gives a
# one-line "kvfold: error: ..." naming the problem and a non-zero exit
# (never a crash, i.e. never a signal).
set -u
KVFOLD="$1"
MODEL=tests/golden/llama3_f32
failures=0
tmp="${TEST_TMPDIR:-$(mktemp -d)}"

# expect_error EXIT_CODE PATTERN ARGS... : exit code and one stderr line.
expect_error() {
  local want_rc="$1" pattern="$2"
  shift 2
  "$KVFOLD" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(grep -c . "$tmp/err")
  if [ "$rc" -ne "$want_rc" ] || ! grep -q -- "$pattern" "$tmp/err" ||
     { [ "$want_rc" -eq 1 ] && [ "$lines" -ne 1 ]; }; then
    echo "FAIL: kvfold $* -> rc=$rc (want $want_rc), stderr:"; cat "$tmp/err"
    failures=$((failures + 1))
  else
    echo "ok: kvfold $* -> $(head -n1 "$tmp/err")"
  fi
}

expect_ok() {
  "$KVFOLD" "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ "$rc" -ne 0 ] || ! grep -q '^{' "$tmp/out"; then
    echo "FAIL: kvfold $* -> rc=$rc"; cat "$tmp/err"
    failures=$((failures + 1))
  else
    echo "ok: kvfold $* -> $(head -c 120 "$tmp/out")"
  fi
}

expect_ok generate --model=$MODEL --ids=1,5,9 --max_new_tokens=4
expect_ok generate --model=$MODEL --ids=1,5,9 --max_new_tokens=4 --temperature=0.8 --top_k=20 --top_p=0.9 --seed=3
expect_ok score --model=$MODEL --ids="1 5 9 33"
printf '1, 5,\n9\n' >"$tmp/ids.txt"
expect_ok score --model=$MODEL --ids_file="$tmp/ids.txt"

# Same seed, same sample; greedy output is the golden continuation's prefix
# (tests/golden_model_test checks it against transformers).
a=$("$KVFOLD" generate --model=$MODEL --ids=1,5,9 --temperature=1 --seed=7 --max_new_tokens=8 | grep -o '"ids":\[[0-9,]*\]')
b=$("$KVFOLD" generate --model=$MODEL --ids=1,5,9 --temperature=1 --seed=7 --max_new_tokens=8 | grep -o '"ids":\[[0-9,]*\]')
if [ -z "$a" ] || [ "$a" != "$b" ]; then
  echo "FAIL: seeded sampling not reproducible: $a vs $b"; failures=$((failures + 1))
fi

expect_error 1 "/nonexistent/config.json" generate --model=/nonexistent --ids=1
expect_error 1 "outside the vocabulary" generate --model=$MODEL --ids=1,5,300
expect_error 1 "is not a token id" generate --model=$MODEL --ids=1,x
expect_error 1 "exactly one of --ids, --ids_file, --text and --text_file" generate --model=$MODEL
expect_error 1 "cannot open" score --model=$MODEL --ids_file=/nonexistent/ids
expect_error 1 "at least two tokens" score --model=$MODEL --ids=1
expect_error 1 "top_p" generate --model=$MODEL --ids=1 --top_p=1.5
expect_error 1 "batch must be >= 1" generate --model=$MODEL --ids=1 --batch=0
expect_error 1 "world size 1 is not divisible by --tp=2.*mpirun -np" generate --model=$MODEL --ids=1 --tp=2
expect_error 1 "documents_file takes the documents as token ids" generate --model=$MODEL --ids=1 --documents_file=/dev/null
: >"$tmp/empty_docs"
printf '1,2\n3,999\n' >"$tmp/bad_docs"
expect_error 1 "bad_docs: document 1: the document: token id 999 at index 1 is outside the vocabulary" generate --model=$MODEL --documents_file="$tmp/bad_docs"
expect_error 1 "no documents" generate --model=$MODEL --documents_file="$tmp/empty_docs"
expect_error 1 "fault injected" generate --model=$MODEL --ids=1 --fault=0:error
expect_error 1 "temperature" generate --model=$MODEL --ids=1 --temperature=-1
expect_error 1 "top_k" generate --model=$MODEL --ids=1 --top_k=-3
expect_error 1 "prefill_chunk" generate --model=$MODEL --ids=1 --prefill_chunk=0
expect_error 1 "max_new_tokens" generate --model=$MODEL --ids=1 --max_new_tokens=-1
expect_error 1 "--model is required" score --ids=1,2
expect_error 1 "unknown" bench --shape=gpt-5
expect_error 2 "unknown command" frobnicate
expect_error 1 "max_new_tokens" generate --model=$MODEL --ids=1 --max_new_tokens=abc
expect_error 1 "threads" generate --model=$MODEL --ids=1 --threads=100000
expect_error 1 "threads" bench --threads=-3
expect_error 1 "not a regular file" score --model=$MODEL --ids_file=/tmp
expect_ok generate --model=$MODEL --ids=1,5 --max_new_tokens=0
expect_ok score --model=$MODEL --ids=1,5,9,33,2,7 --prefill_chunk=2

# KV cache policies: every policy runs, flags and a text proto file agree,
# several questions about one document print one line each.
seq 1 120 | tr '\n' ',' >"$tmp/doc.txt"
for policy in streaming h2o snapkv pyramidkv kvmerger; do
  expect_ok generate --model=$MODEL --ids_file="$tmp/doc.txt" --cache=$policy \
    --cache_slots=48 --cache_window=8 --prefill_chunk=16 --max_new_tokens=3
done
seq 1 120 | tr '\n' ',' >"$tmp/doc.txt"
printf 'slots: 40\nsnapkv { window: 8 kernel: 3 }\n' >"$tmp/cache.txtpb"
expect_ok score --model=$MODEL --ids_file="$tmp/doc.txt" --cache_config="$tmp/cache.txtpb" --prefill_chunk=16
grep -q '"slots_held":80' "$tmp/out" || { echo "FAIL: budget from --cache_config not applied"; failures=$((failures + 1)); }
expect_ok score --model=$MODEL --ids_file="$tmp/doc.txt" --cache_config="$tmp/cache.txtpb" --cache_slots=24 --prefill_chunk=16
grep -q '"slots_held":48' "$tmp/out" || { echo "FAIL: --cache_slots did not override the file"; failures=$((failures + 1)); }
"$KVFOLD" generate --model=$MODEL --ids_file="$tmp/doc.txt" --questions="3,4,5;6,7" --cache=h2o \
  --cache_slots=32 --prefill_chunk=16 --max_new_tokens=2 >"$tmp/out" 2>"$tmp/err"
if [ "$(grep -c '"question"' "$tmp/out")" -ne 2 ]; then
  echo "FAIL: two questions should give two answer lines"; cat "$tmp/out" "$tmp/err"; failures=$((failures + 1))
fi
expect_ok generate --model=$MODEL --ids_file="$tmp/doc.txt" --questions="3,4,5" --question_mode=aware \
  --cache=snapkv --cache_slots=32 --cache_window=4 --prefill_chunk=16 --max_new_tokens=2

expect_error 1 'unknown cache policy "lru"' generate --model=$MODEL --ids=1 --cache=lru
expect_error 1 "smaller than sinks 4 + window 30" generate --model=$MODEL --ids=1 --cache=streaming --cache_slots=32 --cache_window=30
expect_error 1 "larger than the prefill chunk 16" generate --model=$MODEL --ids=1 --cache=snapkv --cache_slots=64 --cache_window=32 --prefill_chunk=16
expect_error 1 "has 3 budgets but the model has 2 layers" generate --model=$MODEL --ids=1 --cache=h2o --cache_layer_slots=8,8,8
expect_error 1 "cache_sinks applies to --cache=streaming only" generate --model=$MODEL --ids=1 --cache=snapkv --cache_slots=64 --cache_sinks=2
expect_error 1 "conflicts with the policy snapkv" generate --model=$MODEL --ids=1 --cache=h2o --cache_config="$tmp/cache.txtpb"
expect_error 1 "needs a budget" generate --model=$MODEL --ids=1 --cache=kvmerger
expect_error 1 "keeps every token" generate --model=$MODEL --ids=1 --cache_slots=64
expect_error 1 "question_mode" generate --model=$MODEL --ids=1 --question_mode=sometimes
expect_error 1 "question 1" generate --model=$MODEL --ids=1 --questions="3,4;"
printf 'slots: 40\nsnapkv { windw: 8 }\n' >"$tmp/bad.txtpb"
expect_error 1 "bad.txtpb:2:" generate --model=$MODEL --ids=1 --cache_config="$tmp/bad.txtpb"
expect_error 1 "cannot open" generate --model=$MODEL --ids=1 --cache_config=/nonexistent.txtpb
# The budget is checked against config.json before the weights are read.
mkdir -p "$tmp/noweights"
cp $MODEL/config.json "$tmp/noweights/"
expect_error 1 "has 1 budgets but the model has 2" generate --model="$tmp/noweights" --ids=1 --cache=h2o --cache_layer_slots=8

# A corrupt checkpoint from the CLI.
mkdir -p "$tmp/bad"
cp $MODEL/config.json "$tmp/bad/"
head -c 100 $MODEL/model.safetensors >"$tmp/bad/model.safetensors"
expect_error 1 "model.safetensors" generate --model="$tmp/bad" --ids=1

# Devices: a CUDA device that is not there, impossible device/dtype pairs.
expect_error 1 "no usable CUDA device" generate --model=$MODEL --ids=1 --device=cuda
expect_error 1 "expected auto, cpu, cuda or cuda:N" generate --model=$MODEL --ids=1 --device=gpu0
expect_error 1 "CPU backend holds weights as f32" generate --model=$MODEL --ids=1 --device=cpu --dtype=bf16
expect_error 1 "expected auto, f32, bf16 or f16" generate --model=$MODEL --ids=1 --dtype=f8
expect_ok generate --model=$MODEL --ids=1,5,9 --max_new_tokens=2 --device=auto

# Text in, text out: a model directory with the 256-id fixture tokenizer.
TOK=tests/golden/tokenizers
mkdir -p "$tmp/textmodel" "$tmp/bigvocab" "$tmp/badtok"
for d in textmodel bigvocab badtok; do
  cp $MODEL/config.json $MODEL/model.safetensors "$tmp/$d/"
done
cp $TOK/tiny256_sentencepiece/tokenizer.json $TOK/tiny256_sentencepiece/tokenizer_config.json "$tmp/textmodel/"
cp $TOK/llama3_bytelevel/tokenizer.json "$tmp/bigvocab/"
echo '{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}' >"$tmp/badtok/tokenizer.json"
expect_ok generate --model="$tmp/textmodel" --text="The licence grants you the right" --max_new_tokens=4
grep -q '"text":' "$tmp/out" || { echo "FAIL: generate --text printed no text"; failures=$((failures + 1)); }
expect_ok generate --model="$tmp/textmodel" --text="A short document." --question="What is it?" --max_new_tokens=3 --stream
[ -s "$tmp/err" ] || { echo "FAIL: --stream wrote nothing to stderr"; failures=$((failures + 1)); }
printf 'First question?\nSecond question?\n' >"$tmp/questions.txt"
expect_ok generate --model="$tmp/textmodel" --text="A short document." --questions_file="$tmp/questions.txt" --max_new_tokens=2
[ "$(grep -c '"question"' "$tmp/out")" -eq 2 ] || { echo "FAIL: two questions, not two answers"; failures=$((failures + 1)); }
expect_ok score --model="$tmp/textmodel" --text="The licence grants you the right"
expect_ok tokenize --model="$tmp/textmodel" --text="Hello world"
expect_ok tokenize --model="$tmp/textmodel" --ids=1,40,50
expect_ok generate --model="$tmp/badtok" --ids=1,5 --max_new_tokens=2
printf 'ok \xff\xfe' >"$tmp/badutf8.txt"
expect_error 1 "badutf8.txt: invalid UTF-8 in input text at byte offset 3" generate --model="$tmp/textmodel" --text_file="$tmp/badutf8.txt"
expect_error 1 "tokenizer.json: cannot open" generate --model=$MODEL --text="hello"
expect_error 1 "model.merges\[0\]" generate --model="$tmp/badtok" --text="hello"
expect_error 1 "outside the model's vocabulary of 256" generate --model="$tmp/bigvocab" --text="hello world"
expect_error 1 "exactly one of --ids, --ids_file, --text and --text_file" generate --model="$tmp/textmodel" --ids=1 --text=hi
expect_error 1 "both as ids or both as text" generate --model="$tmp/textmodel" --ids=1 --question=why
expect_error 1 "--questions takes token ids" generate --model="$tmp/textmodel" --text=hi --questions=1,2
expect_error 1 "expected auto or raw" generate --model="$tmp/textmodel" --text=hi --question=why --chat=maybe
expect_error 1 "score takes one sequence" score --model="$tmp/textmodel" --text=hi --question=why
expect_error 1 "cannot open" generate --model="$tmp/textmodel" --text_file=/nonexistent.txt
# A chat template kvfold cannot evaluate: a clear error naming --chat=raw,
# which then works.
mkdir -p "$tmp/oddchat" && cp "$tmp/textmodel"/* "$tmp/oddchat/"
python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c['chat_template']=\"{% include 'other.jinja' %}\"; json.dump(c, open(sys.argv[1],'w'))" "$tmp/oddchat/tokenizer_config.json"
expect_error 1 "use --chat=raw" generate --model="$tmp/oddchat" --text="A document." --question="Why?"
expect_ok generate --model="$tmp/oddchat" --text="A document." --question="Why?" --chat=raw --max_new_tokens=2

# LoCoCo with a calibrated compressor file (tests/golden/lococo/, made by
# tools/calibrate/make_lococo_golden.py), and its bad input at start-up.
LOCOCO=tests/golden/lococo
COMP=$LOCOCO/parity/official.compressor.safetensors
doc=$(seq 1 120 | awk '{printf "%s%d", (NR > 1 ? "," : ""), ($1 * 37) % 250 + 3}')
expect_ok generate --model=$LOCOCO/model --ids="$doc" --compressor=$COMP --prefill_chunk=16 --max_new_tokens=40
grep -q '"cache_policy":"lococo"' "$tmp/out" || { echo "FAIL: lococo not reported"; failures=$((failures + 1)); }
grep -q '"slots_held":64,' "$tmp/out" || { echo "FAIL: lococo did not keep 32 slots x 2 layers"; cat "$tmp/out"; failures=$((failures + 1)); }
expect_ok score --model=$LOCOCO/model --ids="$doc" --cache=lococo --compressor=$COMP --cache_slots=32 --cache_buffer=4
expect_error 1 "was calibrated for the model \"model\" (2 layers, hidden 64, 4 heads / 2 KV heads of 16, vocabulary 256) but --model has" generate --model=tests/golden/mistral_gqa_f32 --ids=1,2 --compressor=$COMP
head -c 5000 $COMP >"$tmp/cut.safetensors"
expect_error 1 "cut.safetensors" generate --model=$LOCOCO/model --ids=1,2 --compressor="$tmp/cut.safetensors"
expect_error 1 "no such file\|cannot open\|not found" generate --model=$LOCOCO/model --ids=1,2 --compressor=/nonexistent.safetensors
expect_error 1 "format is \"pt\", not a kvfold compressor file" generate --model=$LOCOCO/model --ids=1,2 --compressor=$LOCOCO/model/model.safetensors
expect_error 1 "cache_slots=64 does not match the compressor, calibrated for M=32" generate --model=$LOCOCO/model --ids=1,2 --compressor=$COMP --cache_slots=64
expect_error 1 "needs its calibrated parameters: --compressor=PATH" generate --model=$LOCOCO/model --ids=1,2 --cache=lococo
expect_error 1 "applies to --cache=lococo only" generate --model=$LOCOCO/model --ids=1,2 --cache=h2o --cache_slots=32 --compressor=$COMP
expect_error 1 "cache_buffer applies to --cache=lococo only" generate --model=$LOCOCO/model --ids=1,2 --cache=h2o --cache_slots=32 --cache_buffer=3

# Memory admission (runtime/memory_plan.h): refused at start-up with the
# parts named, before the weights are read; a generous limit changes nothing.
expect_error 1 "needs about .* per rank (weights .*, caches .* for 2 sequences of up to 36 tokens, workspace .*), more than --memory_limit=64K" \
  score --model=$MODEL --ids=1,5,9,33 --memory_limit=64K
echo '{"id": "a", "document_ids": [1, 2, 3], "question_ids": [[4]]}' >"$tmp/jobs.jsonl"
expect_error 1 "sequences of unknown length (a full cache not counted)" \
  run --model=$MODEL --input="$tmp/jobs.jsonl" --output="$tmp/never.jsonl" --memory_limit=100K
[ -e "$tmp/never.jsonl" ] && { echo "FAIL: a refused run left an output file"; failures=$((failures + 1)); }
expect_error 1 "memory_limit: \"12Q\" is not a size" score --model=$MODEL --ids=1,5 --memory_limit=12Q
expect_ok score --model=$MODEL --ids=1,5,9,33 --memory_limit=4G

echo "cli_test: $failures failure(s)"
[ "$failures" -eq 0 ]
