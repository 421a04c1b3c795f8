#!/usr/bin/env python3
"""Calibrate a LoCoCo compressor for kvfold (the official training recipe).

No LoCoCo checkpoints were released, so kvfold ships its own calibration. The
recipe follows VITA-Group/LoCoCo's train.py: sequences are cut into samples of
chunk * chunks_per_sample tokens; each sample starts from an empty cache and is
fed chunk by chunk; after every chunk the next-token cross-entropy of that chunk
is back-propagated and the optimizer steps; the cache is detached between
chunks (one-step truncated backprop), so the conv learns from the chunk that
reads the cache it has just compressed. AdamW, lr 5e-5 with the conv/alpha at
lr x1000 (memory_lr_scale), linear decay. --train_model adds the official
post-training mode: embeddings and norms (lr x5) and LoRA r=8 on q/k/v/o,
merged into an HF checkpoint written to --out_model.

One difference from the official code: the last token of a chunk is also
trained to predict the first token of the next chunk (the official code loses
that target at every chunk boundary); it is what kvfold's `score` measures.

Example (tiny CPU checkpoint):
  python3 tools/calibrate/calibrate.py --model tests/golden/lococo/model \\
      --data tests/golden/lococo/learn/calib.ids --cache_slots 32 --kernel_size 7 \\
      --chunk 32 --chunks_per_sample 16 --steps 600 --out /tmp/c.safetensors \\
      --eval_data tests/golden/lococo/learn/heldout.ids

Output: progress lines on stderr; one JSON object on stdout at the end.
"""

import argparse
import json
import math
import os
import random
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lococo import (ChunkedLM, LoCoCoCompressor, compress_if_needed,  # noqa: E402
                    save_compressor, score_nll)
from lora import add_lora, merge_lora  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "chat_template.jinja")


class UserError(Exception):
    """A mistake in the command line or the input files: reported in one line."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF checkpoint directory (config.json + safetensors)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="token-id sequences, one per line, ids separated by commas/spaces")
    src.add_argument("--text_file", help="UTF-8 text, tokenized with the model's tokenizer as one sequence")
    p.add_argument("--eval_data", help="held-out token-id sequences (same format as --data)")
    p.add_argument("--out", required=True, help="compressor file to write (.safetensors)")
    p.add_argument("--cache_slots", type=int, default=512, help="M, slots per layer and KV head (512)")
    p.add_argument("--variant", choices=("official", "pure"), default="official")
    p.add_argument("--kernel_size", type=int, default=21, help="conv kernel, odd (21)")
    p.add_argument("--buffer", type=int, default=16, help="compress once L > M + buffer (16)")
    p.add_argument("--chunk", type=int, default=512, help="block size: tokens per forward (512)")
    p.add_argument("--chunks_per_sample", type=int, default=8, help="clean_period: chunks per sample (8)")
    p.add_argument("--steps", type=int, default=1000,
                   help="optimizer steps (1000), each over --grad_accum chunks; 0 exports the random init")
    p.add_argument("--grad_accum", type=int, default=1,
                   help="chunks per optimizer step (1; the official runs used 128 per GPU x 8 GPUs)")
    p.add_argument("--lr", type=float, default=5e-5, help="base learning rate (5e-5)")
    p.add_argument("--memory_lr_scale", type=float, default=1000.0, help="lr factor for conv/alpha (1000)")
    p.add_argument("--norm_lr_scale", type=float, default=5.0, help="lr factor, embeddings/norms (5)")
    p.add_argument("--lora_lr_scale", type=float, default=1.0, help="lr factor for LoRA (1)")
    p.add_argument("--weight_decay", type=float, default=0.0, help="AdamW decay (0); never on biases/alpha")
    p.add_argument("--lr_schedule", choices=("linear", "constant"), default="linear")
    p.add_argument("--train_model", action="store_true",
                   help="also train embeddings, norms and LoRA r=8 on q/k/v/o (needs --out_model)")
    p.add_argument("--out_model", help="with --train_model: HF checkpoint directory to write (LoRA merged)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log_every", type=int, default=0, help="progress line every N steps (0: ~50 lines)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    a = p.parse_args(argv)
    positive = {"cache_slots": a.cache_slots, "chunk": a.chunk, "chunks_per_sample": a.chunks_per_sample,
                "grad_accum": a.grad_accum}
    for name, val in positive.items():
        if val < 1:
            p.error(f"--{name} must be >= 1, got {val}")
    if a.kernel_size < 1 or a.kernel_size % 2 == 0:
        p.error(f"--kernel_size must be odd and >= 1, got {a.kernel_size}")
    if a.buffer < 0 or a.steps < 0:
        p.error("--buffer and --steps must be >= 0")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        p.error(f"--lr must be a positive number, got {a.lr}")
    if a.train_model != bool(a.out_model):
        p.error("--train_model and --out_model go together")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", a.device):
        p.error(f"--device must be auto, cpu, cuda or cuda:N, got {a.device!r}")
    return a


# ----------------------------------------------------------------------------- inputs
def read_ids_file(path, vocab_size):
    """One sequence per non-empty line; ids separated by commas and/or spaces."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    seqs = []
    with open(path, encoding="utf-8", errors="strict") as f:
        for n, line in enumerate(f, 1):
            toks = line.replace(",", " ").split()
            if not toks:
                continue
            try:
                ids = [int(t) for t in toks]
            except ValueError:
                bad = next(t for t in toks if not t.lstrip("-").isdigit())
                raise UserError(f"{path}:{n}: {bad!r} is not a token id") from None
            bad = [i for i in ids if not 0 <= i < vocab_size]
            if bad:
                raise UserError(f"{path}:{n}: token id {bad[0]} outside the vocabulary [0, {vocab_size})")
            if len(ids) < 2:
                raise UserError(f"{path}:{n}: a sequence needs at least 2 tokens")
            seqs.append(ids)
    if not seqs:
        raise UserError(f"{path}: no sequences")
    return seqs


def read_text_file(path, model_dir, vocab_size):
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such file")
    if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
        raise UserError(f"{model_dir}: no tokenizer.json, use --data with token ids")
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001 - any loader failure is a bad tokenizer file
        raise UserError(f"{model_dir}: cannot load the tokenizer ({e})") from None
    with open(path, encoding="utf-8") as f:
        ids = tok(f.read())["input_ids"]
    if len(ids) < 2:
        raise UserError(f"{path}: fewer than 2 tokens")
    if max(ids) >= vocab_size:
        raise UserError(f"{model_dir}: the tokenizer made id {max(ids)}, outside the model's vocabulary "
                        f"[0, {vocab_size})")
    return [ids]


def cut_samples(seqs, size):
    """Consecutive samples of `size` tokens; a remainder of >= 2 tokens is kept."""
    out = []
    for s in seqs:
        for i in range(0, len(s), size):
            if len(s[i:i + size]) >= 2:
                out.append(torch.tensor(s[i:i + size], dtype=torch.long))
    return out


def load_model(model_dir, device):
    if not os.path.isdir(model_dir):
        raise UserError(f"{model_dir}: no such directory")
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise UserError(f"{model_dir}: no config.json (not a Hugging Face checkpoint directory)")
    from transformers import AutoModelForCausalLM
    try:
        model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32,
                                                     attn_implementation="eager")
    except Exception as e:  # noqa: BLE001 - report the loader's reason in one line
        raise UserError(f"{model_dir}: cannot load the checkpoint ({str(e).splitlines()[0]})") from None
    return model.to(device)


def check_writable(path):
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as e:
        raise UserError(f"{parent}: cannot create the directory ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"{parent}: not writable")
    if os.path.isdir(path):
        raise UserError(f"{path}: is a directory, want a file name")


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA device available")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


# ----------------------------------------------------------------------------- training
def param_groups(args, comp, model):
    """The official grouping: conv weights (decay) / conv biases + alpha (no decay)
    at lr x memory_lr_scale; embeddings + norms at x norm_lr_scale; LoRA at x lora_lr_scale."""
    base = args.lr
    decay = [c.weight for c in comp.convs]
    no_decay = [c.bias for c in comp.convs] + [a for a in comp.alphas if a.requires_grad]
    groups = [{"params": decay, "lr": base * args.memory_lr_scale, "weight_decay": args.weight_decay},
              {"params": no_decay, "lr": base * args.memory_lr_scale, "weight_decay": 0.0}]
    for p in model.parameters():
        p.requires_grad_(False)
    if args.train_model:
        lora = add_lora(model)
        norm_dec, norm_nd = [], []
        for n, p in model.named_parameters():
            if "lora_" in n:
                continue
            if "embed" in n or "norm" in n:
                p.requires_grad_(True)
                (norm_nd if n.endswith("bias") else norm_dec).append(p)
        groups += [{"params": norm_dec, "lr": base * args.norm_lr_scale, "weight_decay": args.weight_decay},
                   {"params": norm_nd, "lr": base * args.norm_lr_scale, "weight_decay": 0.0},
                   {"params": lora, "lr": base * args.lora_lr_scale, "weight_decay": args.weight_decay}]
    return [g for g in groups if g["params"]]


def chunk_stream(samples, chunk, seed):
    """Endless (starts_sample, inputs, targets) over the samples in a reshuffled
    order each epoch; the targets are the next tokens, across chunk boundaries."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(samples)))
        rng.shuffle(order)
        for si in order:
            sample = samples[si]
            for s in range(0, len(sample) - 1, chunk):
                tgt = sample[s + 1:s + 1 + chunk]
                yield s == 0, sample[s:s + len(tgt)], tgt


def train(args, lm, comp, samples, device):
    """Returns the mean loss of the last progress window (nan for --steps 0)."""
    if args.steps == 0:
        return float("nan")
    model, total, accum = lm.hf, args.steps, args.grad_accum
    opt = torch.optim.AdamW(param_groups(args, comp, model))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: max(0.0, 1.0 - s / total)) if args.lr_schedule == "linear" else (lambda s: 1.0))
    # progress windows cover whole samples, so their losses are comparable
    per_sample = -(-args.chunks_per_sample // accum)
    log_every = args.log_every or per_sample * max(1, total // (50 * per_sample))
    stream = chunk_stream(samples, args.chunk, args.seed)
    window, tokens, t0, final, cache = [], 0, time.time(), float("nan"), None
    model.train()
    for step in range(1, total + 1):
        for _ in range(accum):
            first, inp, tgt = next(stream)
            if first:
                cache = lm.new_cache()  # fresh cache per sample
            logits = lm.forward(inp.to(device), cache, lazy=True)
            loss = F.cross_entropy(logits, tgt.to(device))
            if loss.requires_grad:  # False while the cache is short and only the conv trains
                (loss / accum).backward()
            window.append(loss.item())
            tokens += len(tgt)
        opt.step()  # parameters without a gradient are left alone
        opt.zero_grad(set_to_none=True)
        sched.step()
        if step % log_every == 0 or step == total:
            final = sum(window) / len(window)
            alphas = ",".join(f"{a.item():.3f}" for a in comp.alphas)
            print(f"step {step}/{total} loss {final:.4f} tok/s {tokens / (time.time() - t0):.0f} "
                  f"lr {sched.get_last_lr()[0]:.3g} alpha {alphas}", file=sys.stderr, flush=True)
            window = []
    model.eval()
    return final


def evaluate(lm, seqs, chunk):
    """Held-out NLL exactly as kvfold's `score` computes it."""
    per, tot, ntok = [], 0.0, 0
    for s in seqs:
        nll = score_nll(lm, s, chunk)
        per.append({"tokens": len(s) - 1, "nll": nll, "mean_nll": nll / (len(s) - 1)})
        tot, ntok = tot + nll, ntok + len(s) - 1
    return {"sequences": per, "tokens": ntok, "mean_nll_per_token": tot / ntok}


def save_model(model, model_dir, out_dir):
    merge_lora(model)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(model_dir, name)):
            shutil.copy(os.path.join(model_dir, name), os.path.join(out_dir, name))


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    for target in [args.out] + ([os.path.join(args.out_model, "x")] if args.out_model else []):
        check_writable(target)  # before a long training run, not after
    model = load_model(args.model, device)
    cfg = model.config
    seqs = (read_ids_file(args.data, cfg.vocab_size) if args.data
            else read_text_file(args.text_file, args.model, cfg.vocab_size))
    eval_seqs = read_ids_file(args.eval_data, cfg.vocab_size) if args.eval_data else None
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    try:
        comp = LoCoCoCompressor.for_variant(args.variant, cfg.num_hidden_layers, head_dim, args.cache_slots,
                                            args.kernel_size, args.buffer, args.seed).to(device)
    except ValueError as e:
        raise UserError(str(e)) from None
    samples = cut_samples(seqs, args.chunk * args.chunks_per_sample)
    longest = max(len(s) for s in samples)
    if args.steps and longest <= args.cache_slots + args.buffer + args.chunk:
        print(f"calibrate: warning: no sample is longer than cache_slots + buffer + chunk "
              f"({args.cache_slots + args.buffer + args.chunk}); compression never runs during training",
              file=sys.stderr)
    lm = ChunkedLM(model, lambda st, l: compress_if_needed(st, comp, l))
    print(f"calibrate: {len(samples)} samples, {sum(len(s) for s in samples)} tokens, "
          f"M={args.cache_slots} Mc={comp.compressed_slots} k={args.kernel_size} variant={args.variant} "
          f"device={device}", file=sys.stderr)
    t0 = time.time()
    final_loss = train(args, lm, comp, samples, device)
    train_s = time.time() - t0
    calib = {"steps": args.steps, "grad_accum": args.grad_accum, "chunk": args.chunk,
             "chunks_per_sample": args.chunks_per_sample,
             "lr": repr(args.lr), "memory_lr_scale": repr(args.memory_lr_scale), "seed": args.seed,
             "data": args.data or args.text_file, "final_loss": repr(final_loss),
             "train_model": "true" if args.train_model else "false"}
    # the compressor belongs with the model it was calibrated for: the fine-tuned one under --train_model
    name = os.path.basename(os.path.normpath(args.out_model if args.train_model else args.model))
    try:
        save_compressor(comp, args.out, cfg, name, calib)
    except OSError as e:
        raise UserError(f"{args.out}: cannot write ({e.strerror})") from None
    result = {"out": args.out, "variant": args.variant, "steps": args.steps,
              "final_loss": None if math.isnan(final_loss) else final_loss,  # strict JSON: no NaN
              "train_seconds": round(train_s, 2),
              "alpha": [a.item() for a in comp.alphas]}
    if args.train_model:
        save_model(model, args.model, args.out_model)
        result["out_model"] = args.out_model
    if eval_seqs:
        with torch.no_grad():
            result["eval"] = evaluate(lm, eval_seqs, args.chunk)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"calibrate: error: {e}", file=sys.stderr)
        sys.exit(1)
