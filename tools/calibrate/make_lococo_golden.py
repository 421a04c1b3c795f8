#!/usr/bin/env python3
"""Write tests/golden/lococo/: LoCoCo parity data for kvfold's C++ runtime and the
"calibration actually learns" experiment.

  model/   a tiny random LlamaForCausalLM (vocab 256, hidden 64, 2 layers,
           4 heads / 2 KV heads, head_dim 16), saved with save_pretrained.
  parity/  per variant (official: M=32, hh 0.5, k=7, alpha 0.37/0.81;
           pure: M=32, hh 0, k=5, alpha 1) a random-init compressor file and
           the cache state (keys, values, positions) of every layer plus the
           logits after EVERY forward of a 150-token prompt prefilled in chunks
           of 24 and 40 teacher-forced decode steps, eager compression applied.
  learn/   sequences sampled from the tiny model itself (full cache), compressors
           calibrated with calibrate.py and their random-init twins, and
           results.json: held-out NLL per token for full cache, calibrated and
           random LoCoCo, StreamingLLM (4 sinks + 28 recent) and hh-drop.

Self-checks (asserted): chunked logits without compression equal the HF model's
full-sequence logits; eager and lazy (training-path) compression give the same
logits; every top-k pick has a relative score gap > 1e-4 (else another prompt
seed is drawn); the compressor files round-trip; calibrate.py's own eval equals
this script's. Also reported: the largest |f32 - f64| difference of the parity
data, i.e. the tolerance a correct f32 implementation can expect.

Usage (CPU, a few minutes; see tools/calibrate/README.md):
    python3 tools/calibrate/make_lococo_golden.py --out tests/golden/lococo
"""

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from lococo import (ChunkedLM, LoCoCoCompressor, check_against_hf, compress_if_needed,  # noqa: E402
                    hh_drop, load_compressor, save_compressor, score_nll, streaming_evict,
                    topk_margins)

MODEL_SEED = 20240611
MARGIN_MIN = 1e-4
# The parity convs are the official init (standard normal) scaled by 0.1: with the
# unscaled init the conv's pre-activations reach ~90, the softmax over slots is
# saturated, and f32 rounding alone moves fused keys by ~1e-3 (measured against
# f64), which would make a 1e-6 parity test meaningless. Scaled, |f32 - f64| of
# the keys is ~1e-5 and the arithmetic is what gets tested.
PARITY_WEIGHT_SCALE = 0.1
PARITY = {  # variant: (compressor seed, kernel, alphas per layer)
    "official": (101, 7, (0.37, 0.81)),
    "pure": (202, 5, (1.0, 1.0)),
}
PROMPT_LEN, PREFILL_CHUNK, DECODE_STEPS, SLOTS, BUFFER = 150, 24, 40, 32, 16


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- model
def build_model(out_dir, init_range):
    """HF's post_init draws Linear/Embedding weights from N(0, initializer_range),
    norms at 1; 0.2 makes attention content-dependent enough that long context
    matters (full cache vs StreamingLLM: 4.35 vs 5.91 NLL on its own samples)."""
    torch.manual_seed(MODEL_SEED)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=4096, rope_theta=10000.0, rope_scaling=None,
                      tie_word_embeddings=False, initializer_range=init_range, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, torch_dtype="float32")
    LlamaForCausalLM(cfg).save_pretrained(out_dir, safe_serialization=True)
    return load_model(out_dir)


def load_model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                attn_implementation="eager").eval()


# ----------------------------------------------------------------------------- parity
def run_steps(model, comp, ids, margins=None):
    """Eager path: returns per forward (logits, [(keys, values, positions)] per layer)."""
    def policy(st, layer):
        if margins is not None and st.length > comp.cache_slots + comp.buffer:
            margins.extend(topk_margins(st.hh, comp.keep_hh, comp.compressed_slots))
        return compress_if_needed(st, comp, layer)
    lm, out = ChunkedLM(model, policy), []
    cache = lm.new_cache()
    feeds = [ids[s:min(s + PREFILL_CHUNK, PROMPT_LEN)] for s in range(0, PROMPT_LEN, PREFILL_CHUNK)]
    feeds += [ids[PROMPT_LEN + i:PROMPT_LEN + i + 1] for i in range(DECODE_STEPS)]
    with torch.no_grad():
        for f in feeds:
            logits = lm.forward(f, cache)
            out.append((logits, [(st.keys.clone(), st.values.clone(), st.positions.clone())
                                 for st in cache.layers]))
    return feeds, out


def to_f64(model):
    """A float64 copy whose RMSNorms also run in f64 (HF's upcast them to f32 only)."""
    model = copy.deepcopy(model).double()
    for mod in model.modules():
        if type(mod).__name__.endswith("RMSNorm"):
            mod.forward = lambda x, m=mod: m.weight * (
                x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))
    return model


def lazy_logits(model, comp, feeds):
    lm = ChunkedLM(model, lambda st, l: compress_if_needed(st, comp, l))
    cache = lm.new_cache()
    with torch.no_grad():
        return [lm.forward(f, cache, lazy=True) for f in feeds]


def make_parity(model, out_dir, summary):
    os.makedirs(out_dir, exist_ok=True)
    cfg = model.config
    for variant, (seed, k, alphas) in PARITY.items():
        comp = LoCoCoCompressor.for_variant(variant, cfg.num_hidden_layers, cfg.head_dim, SLOTS, k,
                                            BUFFER, seed)
        with torch.no_grad():
            for conv, a, val in zip(comp.convs, comp.alphas, alphas):
                conv.weight.mul_(PARITY_WEIGHT_SCALE)
                a.fill_(val)
        path = os.path.join(out_dir, f"{variant}.compressor.safetensors")
        save_compressor(comp, path, cfg, "model", {
            "steps": 0, "chunk": 0, "chunks_per_sample": 0, "lr": "0.0", "seed": seed,
            "data": f"none (random init, conv weight x{PARITY_WEIGHT_SCALE}, alphas set by make_lococo_golden.py)",
            "final_loss": "nan",
            "train_model": "false"})
        comp, _ = load_compressor(path, cfg)  # the golden data come from the file's values
        for prompt_seed in range(1000, 1100):
            g = torch.Generator().manual_seed(prompt_seed)
            ids = torch.randint(3, 256, (PROMPT_LEN + DECODE_STEPS,), generator=g)
            ids[0] = 1
            margins = []
            feeds, steps = run_steps(model, comp, ids, margins)
            if min(margins) > MARGIN_MIN:
                break
            log(f"parity {variant}: prompt seed {prompt_seed} has a top-k gap {min(margins):.2e}, next")
        else:
            raise SystemExit(f"parity {variant}: no prompt seed with top-k gaps > {MARGIN_MIN}")
        # eager (what kvfold holds) == lazy (the training path), logits of every forward
        lazy = lazy_logits(model, comp, feeds)
        lazy_err = max((a - b).abs().max().item() for a, (b, _) in zip(lazy, steps))
        assert lazy_err < 1e-5, f"eager vs lazy logits differ by {lazy_err}"
        # the same in float64: the error scale an exact f32 reimplementation can expect
        _, steps64 = run_steps(to_f64(model), copy.deepcopy(comp).double(), ids)
        f64 = {"logits": 0.0, "keys": 0.0, "values": 0.0}
        for (lg, layers), (lg64, layers64) in zip(steps, steps64):
            f64["logits"] = max(f64["logits"], (lg.double() - lg64).abs().max().item())
            for (kk, vv, pp), (k64, v64, p64) in zip(layers, layers64):
                assert torch.equal(pp, p64), "f32 and f64 runs selected different slots"
                f64["keys"] = max(f64["keys"], (kk.double() - k64).abs().max().item())
                f64["values"] = max(f64["values"], (vv.double() - v64).abs().max().item())
        tensors = {}
        for s, (logits, layers) in enumerate(steps):
            tensors[f"step{s}.logits"] = logits.contiguous()
            for l, (kk, vv, pp) in enumerate(layers):
                tensors[f"step{s}.layer{l}.keys"] = kk.contiguous()
                tensors[f"step{s}.layer{l}.values"] = vv.contiguous()
                tensors[f"step{s}.layer{l}.positions"] = pp.to(torch.int32).contiguous()
        meta = {"ids": ",".join(map(str, ids.tolist())), "prefill_chunk": str(PREFILL_CHUNK),
                "prompt_length": str(PROMPT_LEN), "decode_steps": str(DECODE_STEPS),
                "buffer": str(BUFFER), "steps": str(len(steps)), "variant": variant,
                "compressor": os.path.basename(path), "cache_slots": str(SLOTS),
                "prompt_seed": str(prompt_seed), "min_topk_margin": repr(min(margins)),
                "compressions": str(len(margins) // 2),
                "f64_max_abs_diff.logits": repr(f64["logits"]), "f64_max_abs_diff.keys": repr(f64["keys"]),
                "f64_max_abs_diff.values": repr(f64["values"])}
        save_file(tensors, os.path.join(out_dir, f"{variant}.golden.safetensors"), metadata=meta)
        summary["parity"][variant] = {"prompt_seed": prompt_seed, "forwards": len(steps),
                                      "compressions": len(margins) // 2, "min_topk_margin": min(margins),
                                      "eager_vs_lazy_max_abs": lazy_err, "f64_max_abs_diff": f64}
        log(f"parity {variant}: seed {prompt_seed}, {len(steps)} forwards, {len(margins) // 2} layer "
            f"compressions, min top-k margin {min(margins):.3e}, |f32-f64| {f64}")


# ----------------------------------------------------------------------------- learn
@torch.no_grad()
def sample(model, n, length, temperature, seed):
    """n sequences of `length` tokens from the model itself (BOS, then sampled),
    full KV cache, batched."""
    from transformers import DynamicCache
    g = torch.Generator().manual_seed(seed)
    seqs = torch.full((n, 1), 1, dtype=torch.long)
    cache, inp = DynamicCache(), seqs
    for _ in range(length - 1):
        logits = model(input_ids=inp, past_key_values=cache, use_cache=True).logits[:, -1].double()
        nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)
        seqs, inp = torch.cat([seqs, nxt], 1), nxt
    return seqs.tolist()


def write_ids(path, seqs):
    with open(path, "w") as f:
        f.writelines(",".join(map(str, s)) + "\n" for s in seqs)


def run_calibrate(model_dir, learn_dir, out, variant, kernel, steps, args):
    """Run calibrate.py as a user would (from the repository root, relative paths,
    so the files' metadata do not depend on where the checkout lives)."""
    rel = lambda p: os.path.relpath(p, REPO)
    cmd = ["tools/calibrate/calibrate.py", "--model", rel(model_dir),
           "--data", rel(os.path.join(learn_dir, "calib.ids")),
           "--eval_data", rel(os.path.join(learn_dir, "heldout.ids")), "--out", rel(out),
           "--variant", variant, "--cache_slots", str(args.slots), "--kernel_size", str(kernel),
           "--buffer", str(BUFFER), "--chunk", str(args.chunk), "--chunks_per_sample", str(args.cps),
           "--steps", str(steps), "--grad_accum", str(args.grad_accum), "--lr", repr(args.lr),
           "--seed", str(args.seed), "--device", "cpu", "--threads", str(args.threads)]
    log("$ python3 " + " ".join(cmd))
    t0 = time.time()
    res = subprocess.run([sys.executable] + cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if res.returncode:
        raise SystemExit(f"calibrate.py failed ({res.returncode})")
    report = json.loads(res.stdout)
    report["wall_seconds"] = round(time.time() - t0, 1)
    report["command"] = "python3 " + " ".join(cmd)
    return report


def make_learn(model_dir, model, learn_dir, args, summary):
    os.makedirs(learn_dir, exist_ok=True)
    t0 = time.time()
    calib = sample(model, args.n_calib, args.length, args.temperature, args.seed + 1)
    held = sample(model, args.n_heldout, args.length, args.temperature, args.seed + 2)
    write_ids(os.path.join(learn_dir, "calib.ids"), calib)
    write_ids(os.path.join(learn_dir, "heldout.ids"), held)
    log(f"learn: sampled {len(calib)} + {len(held)} sequences of {args.length} in {time.time() - t0:.1f}s, "
        f"distinct tokens per held-out sequence {[len(set(s)) for s in held]}")
    ntok = sum(len(s) - 1 for s in held)

    def nll(policy):
        return sum(score_nll(ChunkedLM(model, policy), s, args.chunk) for s in held) / ntok

    res = {"full": nll(None),
           "streaming_4+28": nll(lambda st, l: streaming_evict(st, args.slots, 4, 0)),
           "hh_drop": nll(lambda st, l: hh_drop(st, args.slots, BUFFER))}
    # (result name, variant, kernel, directory); the extra run is recorded, its files not kept
    configs = [("official", "official", args.kernel, learn_dir), ("pure", "pure", args.pure_kernel, learn_dir)]
    tmp = tempfile.TemporaryDirectory()
    if args.extra_pure_kernel:
        configs.append((f"pure_k{args.extra_pure_kernel}", "pure", args.extra_pure_kernel, tmp.name))
    runs = {}
    for name, variant, kernel, where in configs:
        for steps in (args.steps, 0):
            key = f"{name}_{'calibrated' if steps else 'random'}"
            path = os.path.join(where, f"{variant}.{'calibrated' if steps else 'random'}.safetensors")
            report = run_calibrate(model_dir, learn_dir, path, variant, kernel, steps, args)
            comp, _ = load_compressor(path, model.config)
            res[key] = nll(lambda st, l, c=comp: compress_if_needed(st, c, l))
            gap = abs(res[key] - report["eval"]["mean_nll_per_token"])
            assert gap < 1e-9, f"{key}: calibrate.py eval differs from this script by {gap}"
            runs[key] = {k: report[k] for k in ("final_loss", "alpha", "train_seconds", "wall_seconds",
                                                "command")}
            runs[key]["kernel_size"] = kernel
            runs[key]["file"] = os.path.relpath(path, learn_dir) if where == learn_dir else "(not kept)"
    tmp.cleanup()
    goals = {name: {"calibrated_lt_random": res[f"{name}_calibrated"] < res[f"{name}_random"],
                    "calibrated_lt_streaming": res[f"{name}_calibrated"] < res["streaming_4+28"]}
             for name, *_ in configs}
    out = {"heldout_mean_nll_per_token": res, "goals": goals, "runs": runs,
           "setup": {"init_range": args.init_range, "temperature": args.temperature,
                     "calib_sequences": args.n_calib, "heldout_sequences": args.n_heldout,
                     "length": args.length, "heldout_tokens_scored": ntok, "cache_slots": args.slots,
                     "buffer": BUFFER, "chunk": args.chunk, "chunks_per_sample": args.cps,
                     "steps": args.steps, "grad_accum": args.grad_accum, "lr": args.lr, "seed": args.seed,
                     "streaming": "4 sinks + 28 recent, evicted after each forward when L > 32",
                     "hh_drop": "top-32 by last-forward attention, when L > 32 + 16 (official 'hh')"}}
    with open(os.path.join(learn_dir, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    summary["learn"] = out
    log("learn: held-out mean NLL per token: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items()))
    log(f"learn: goals {goals}")


# ----------------------------------------------------------------------------- main
def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "tests", "golden", "lococo"))
    p.add_argument("--parts", default="model,parity,learn",
                   help="comma list of model, parity, learn (default all; parity/learn need model/)")
    p.add_argument("--init_range", type=float, default=0.2, help="tiny model initializer_range")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--n_calib", type=int, default=48)
    p.add_argument("--n_heldout", type=int, default=6)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--slots", type=int, default=32)
    p.add_argument("--kernel", type=int, default=7, help="learn: official variant's kernel")
    p.add_argument("--pure_kernel", type=int, default=1,
                   help="learn: pure variant's kernel (1; 7 does not beat StreamingLLM here, see README)")
    p.add_argument("--extra_pure_kernel", type=int, default=7,
                   help="learn: also record (no files kept) pure with this kernel; 0 = skip")
    p.add_argument("--chunk", type=int, default=32)
    p.add_argument("--cps", type=int, default=16, help="chunks per sample")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--grad_accum", type=int, default=16, help="learn: chunks per optimizer step")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"model", "parity", "learn"}:
        p.error(f"--parts: unknown part(s) {sorted(parts - {'model', 'parity', 'learn'})}")
    torch.set_num_threads(args.threads)
    model_dir = os.path.join(args.out, "model")
    summary = {"parity": {}}
    if "model" in parts:
        build_model(model_dir, args.init_range)
    elif not os.path.isfile(os.path.join(model_dir, "config.json")):
        p.error(f"{model_dir}: no model yet, run with --parts model first")
    model = load_model(model_dir)
    ids = torch.randint(3, 256, (PROMPT_LEN,), generator=torch.Generator().manual_seed(7))
    ids[0] = 1
    err = check_against_hf(model, ids, PREFILL_CHUNK)  # asserts
    summary["chunked_vs_hf_max_abs"] = err
    log(f"model: chunked (no compression) vs HF full-sequence logits, max abs diff {err:.2e}")
    if "parity" in parts:
        make_parity(model, os.path.join(args.out, "parity"), summary)
    if "learn" in parts:
        make_learn(model_dir, model, os.path.join(args.out, "learn"), args, summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
