#!/usr/bin/env bash
# On the GPU machine, from the repository root, after tools/gpu/package.sh
# packed the binaries into .gpu/: the CUDA op and model tests, then the
# benchmarks (kvfold bench_gpu and the transformers side-by-side), logs and
# JSON into $OUT (default /tmp/gpu_out). Set BENCH=0 to run the tests only.
set -uo pipefail
export LD_LIBRARY_PATH="$PWD/.gpu/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
OUT="${OUT:-/tmp/gpu_out}"
mkdir -p "$OUT"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee "$OUT/device.txt"
git log -1 --format='commit %H %cd' 2>/dev/null | tee -a "$OUT/device.txt"
for t in cuda_ops_test cuda_model_test; do
  timeout 600 ".gpu/bin/$t" > "$OUT/$t.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |error vs|max \|logprob|greedy compared" "$OUT/$t.log" | tail -60
done
if [ "${BENCH:-1}" = 1 ]; then
  PYTHONUNBUFFERED=1 timeout 900 python3 tools/gpu/hf_decode_bench.py --shape llama-3.2-1b \
      --context 32768 --out_dir /tmp/ckpt-1b 2>&1 | tee "$OUT/hf_1b.jsonl" || status=1
  timeout 900 .gpu/bin/kvfold bench_gpu --gpu_shapes=/tmp/ckpt-1b \
      --gpu_doc_lengths=32768 2>&1 | tee "$OUT/bench_ckpt_1b.jsonl" || status=1
  timeout 1200 .gpu/bin/kvfold bench_gpu ${BENCH_FLAGS:-} 2>&1 | tee "$OUT/bench_gpu.jsonl" || status=1
fi
exit $status
