#!/usr/bin/env python3
"""Hugging Face transformers' decode speed on a random-weight Llama checkpoint
of a named shape, for the side-by-side with `kvfold bench_gpu`.

Saves the checkpoint (bf16 safetensors) to --out_dir so kvfold loads the very
same weights, prefills a --context-token document and times --steps greedy
decode steps with transformers' default (full) cache, and, when kvpress is
importable, with its StreamingLLM and SnapKV presses. Prints one JSON line
per configuration. Runs where torch + transformers + a GPU are (the GPU
machine has them preinstalled); not part of the test suite.
"""
import argparse
import json
import statistics
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192,
                         num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=64, tie_word_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
    "llama-3.1-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                         num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         head_dim=128, tie_word_embeddings=False,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0,
                                       "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
}


def decode_steps(model, ids, steps, press=None):
    """Prefill `ids`, then time `steps` greedy steps; returns per-step seconds."""
    ctx = press(model) if press is not None else torch.no_grad()
    with torch.no_grad(), ctx:
        out = model(ids, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    tok = out.logits[:, -1:].argmax(-1)
    times = []
    with torch.no_grad():
        for _ in range(steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = model(tok, past_key_values=cache, use_cache=True)
            tok = out.logits[:, -1:].argmax(-1)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cache = out.past_key_values
    return times


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    p.add_argument("--context", type=int, default=32768)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--out_dir", required=True)
    a = p.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(max_position_embeddings=131072, rope_theta=500000.0,
                      rms_norm_eps=1e-5, torch_dtype="bfloat16", **SHAPES[a.shape])
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    model.save_pretrained(a.out_dir, safe_serialization=True)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (1, a.context), generator=g).cuda()
    base = {"shape": a.shape, "context": a.context, "transformers": transformers.__version__,
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name()}
    runs = [("transformers default cache", None)]
    try:
        import kvpress  # noqa: F401
        from kvpress import SnapKVPress, StreamingLLMPress
        ratio = max(0.0, 1.0 - 512.0 / a.context)
        runs.append(("kvpress StreamingLLM 512", StreamingLLMPress(compression_ratio=ratio)))
        runs.append(("kvpress SnapKV 512", SnapKVPress(compression_ratio=ratio)))
    except Exception as e:  # reported, not hidden
        print(json.dumps({**base, "kvpress": f"not run: {type(e).__name__}: {e}"}), flush=True)
    for name, press in runs:
        decode_steps(model, ids[:, :1024], 4, press)  # warm-up
        times = decode_steps(model, ids, a.steps, press)
        step = statistics.median(times)
        print(json.dumps({**base, "run": name, "decode_step_ms_median": step * 1e3,
                          "decode_tokens_per_s": 1.0 / step}), flush=True)


if __name__ == "__main__":
    main()
