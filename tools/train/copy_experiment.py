"""Small experiment behind tools/model/README.md ("Second CPU run"): how fast
a model of the built-in shape learns to copy repeated random strings, on one
CPU thread, under a few settings. Prints one JSON line every 50 steps: the
training loss on the repeats and held-out copy accuracy (argmax right) on
strings of exactly 8 and 32 ids.

The runs quoted there (6 or 5 minutes each, two at a time on 2 cores):
    copy_experiment.py --name base --minutes 6
    copy_experiment.py --name lr3 --lr 3e-3 --warmup 50 --minutes 6
    copy_experiment.py --name tie --tie 1 --minutes 5
    copy_experiment.py --name tie_lr3 --tie 1 --lr 3e-3 --warmup 50 --minutes 5
    copy_experiment.py --name v128 --tie 1 --lr 3e-3 --warmup 50 --vocab_hi 131 --minutes 5
    copy_experiment.py --name v32k448 --tie 1 --lr 3e-3 --warmup 50 --vocab_hi 35 \
        --kmin 4 --kmax 48 --n 256 --rows 16 --minutes 6
    copy_experiment.py --name th1e4 --tie 1 --lr 3e-3 --warmup 50 --vocab_hi 35 \
        --kmin 4 --kmax 48 --n 256 --rows 16 --theta 10000 --no_repeat 1 --minutes 7
"""
import argparse
import json
import random
import sys
import os
import time

import torch
from transformers import LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--name", default="x")
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--warmup", type=int, default=0)
ap.add_argument("--n", type=int, default=128, help="tokens per row")
ap.add_argument("--rows", type=int, default=32)
ap.add_argument("--kmin", type=int, default=4, help="shortest string")
ap.add_argument("--kmax", type=int, default=12, help="longest string")
ap.add_argument("--vocab_lo", type=int, default=3, help="strings draw ids in [lo, hi)")
ap.add_argument("--vocab_hi", type=int, default=1024)
ap.add_argument("--no_repeat", type=int, default=0, help="1: no id twice in a string")
ap.add_argument("--tie", type=int, default=0, help="1: tied embeddings")
ap.add_argument("--theta", type=float, default=500000.0, help="RoPE theta")
ap.add_argument("--minutes", type=float, default=5)
a = ap.parse_args()
torch.set_num_threads(1)
torch.manual_seed(0)
shape = argparse.Namespace(hidden=192, mlp=512, layers=4, heads=6, kv_heads=2,
                           position_span=32768, rope_theta=a.theta, tie_embeddings=a.tie)
config = train.model_config(shape, 1024)
config._attn_implementation = "sdpa"
model = LlamaForCausalLM(config)
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.01)


def row(n, rng, kmin, kmax):
    pool = list(range(a.vocab_lo, a.vocab_hi))
    if a.no_repeat:
        k = rng.randint(min(kmin, len(pool)), min(kmax, len(pool)))
        unit = rng.sample(pool, k)
    else:
        k = rng.randint(kmin, kmax)
        unit = [rng.choice(pool) for _ in range(k)]
    seq = [0] + (unit * (n // k + 1))[:n - 1]
    return seq, [0.0] * k + [1.0] * (n - 1 - k)


def tensors(rows):
    return torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows])


@torch.no_grad()
def copy_accuracy(k):
    ids, w = tensors([row(256, random.Random(99), k, k) for _ in range(16)])
    hit = (model(input_ids=ids).logits[:, :-1].argmax(-1) == ids[:, 1:]).float()
    return round(float((hit * w).sum() / w.sum()), 3)


rng = random.Random(1)
t0, step = time.time(), 0
while time.time() - t0 < a.minutes * 60:
    ids, w = tensors([row(a.n, rng, a.kmin, a.kmax) for _ in range(a.rows)])
    for g in opt.param_groups:
        g["lr"] = a.lr * min(1.0, (step + 1) / max(1, a.warmup))
    logits = model(input_ids=ids).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 1024), ids[:, 1:].reshape(-1),
                                           reduction="none")
    loss = (ce * w.reshape(-1)).sum() / w.sum()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    step += 1
    if step % 50 == 0:
        print(json.dumps({"name": a.name, "step": step, "s": round(time.time() - t0),
                          "loss": round(loss.item(), 3), "copy8": copy_accuracy(8),
                          "copy32": copy_accuracy(32)}), flush=True)
