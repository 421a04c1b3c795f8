"""Trains kvfold's built-in model: a small Llama (transformers'
LlamaForCausalLM, so kvfold and transformers load the same files) that
answers the tools/tasks questions over long documents.

    python3 tools/train/train.py --tokenizer DIR --out DIR [--task_steps 3000] \
        [--device auto|cpu|cuda] [--threads 2] [--seed 0] [--resume | --init_from DIR]

Two phases, everything generated on the fly from the seed, nothing
downloaded.

Phase 1 (copying): random strings of 4 to 48 ids, no id twice in a string,
repeated to fill 256 tokens; the loss is on the repeats. The ids come from a
pool of 32 (the ten digits and 22 others), doubled each time held-out copy
accuracy reaches --pool_grow_at, until the pool is the whole vocabulary;
then phase 2 begins (or after --induction_steps). Copying (induction heads)
is what every task rests on; on the task mix alone, or on strings over all
1,024 ids, it had not formed after hundreds of CPU steps.

Phase 2 (tasks): each sequence is one task sample (tools/tasks/tasks.py:
passkey, niah_multikey, kv, vt, qa, equally often) rendered in the chat
template of the tokenizer ("<|bos|>DOCUMENT\\n\\nQUESTION\\nAnswer:
ANSWER<|eos|>"), followed by up to --extra_questions more questions about the
same document; --repeat_fraction of the rows are repeated strings over the
whole vocabulary. The loss is the answer tokens' mean plus 0.1 x the
document's mean next-token loss (so the model reads the haystack as language
too). Lengths follow a curriculum (short first, up to --max_train_tokens).
Long-context generalisation: positions are PoSE-style (Zhu et al. 2023): a
sequence of n tokens is cut in two chunks whose position ids are shifted by
random skips, so relative distances up to --position_span are seen while
training on short sequences; a third of the sequences keep contiguous
positions.

Writes OUT/model.safetensors, config.json, generation_config.json and a
copy of the tokenizer files, OUT/train_state.pt (for --resume), and
OUT/train_log.jsonl (phase 1: loss and copy accuracy every 50 steps; phase
2: loss, held-out teacher-forced exact match per task and copy accuracy
every --eval_every steps).
"""
import argparse
import json
import math
import os
import random
import shutil
import sys
import time

import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tasks"))
import tasks  # noqa: E402


def model_config(args, vocab):
    return LlamaConfig(
        vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
        max_position_embeddings=args.position_span, rope_theta=args.rope_theta,
        rms_norm_eps=1e-5, tie_word_embeddings=bool(args.tie_embeddings), bos_token_id=0, eos_token_id=1,
        pad_token_id=2, attention_bias=False, mlp_bias=False, torch_dtype="float32")


class Data:
    def __init__(self, tok, seed):
        self.tok = tok
        self.count = lambda s: len(tok.encode(s, add_special_tokens=False).ids)
        self.hay = tasks.Haystack(self.count)
        self.rng = random.Random(seed)
        self.bos = tok.token_to_id("<|bos|>")
        self.eos = tok.token_to_id("<|eos|>")
        self.overhead = self.count("\nAnswer:") + 1

    def sample(self, task, n, rng=None, extra=0):
        """(prompt, answer) ids; with `extra`, up to that many more questions
        about the same document follow the first answer's eos, each
        "\n\nQUESTION\nAnswer: ANSWER<eos>" (their answers join the answer
        list as (prompt part, answer) pairs). Inference only ever sees the
        first; the others give the retrieval more signal per token."""
        rng = rng or self.rng
        s = tasks.make_sample(task, rng, self.hay, n - 8 - 16 * extra, self.overhead)
        prompt = [self.bos] + self.tok.encode(
            s["document"] + "\n\n" + s["question"] + "\nAnswer:", add_special_tokens=False).ids
        answer = self.tok.encode(" " + s["answer"], add_special_tokens=False).ids + [self.eos]
        if not extra:
            return prompt, answer
        more = list(s["more_questions"])
        rng.shuffle(more)
        parts = [(prompt, answer)]
        for q, a in more[:extra]:
            parts.append((self.tok.encode("\n\n" + q + "\nAnswer:", add_special_tokens=False).ids,
                          self.tok.encode(" " + a, add_special_tokens=False).ids + [self.eos]))
        return parts

    def batch(self, n, rows, rng=None, pose=True):
        rng = rng or self.rng
        ids, weights, positions = [], [], []
        for _ in range(rows):
            if rng.random() < self.repeat_fraction:
                seq, w = self.repeat_row(n, rng)
                ids.append(seq)
                weights.append(w)
                positions.append(self.positions(n, rng, pose))
                continue
            task = rng.choice(tasks.TASKS)
            seq, w = [], []
            for prompt, answer in self.sample(task, n, rng, extra=self.extra):
                # Weight of predicting each next token: 0.1 inside the
                # document, 0 on later questions, 1 on answers.
                w += [0.1 if not seq else 0.0] * len(prompt) + [1.0] * len(answer)
                seq += prompt + answer
            seq, w = seq[:n], w[1:n]
            pad = n - len(seq)
            ids.append(seq + [2] * pad)
            weights.append(w + [0.0] * (n - 1 - len(w)))
            positions.append(self.positions(len(seq), rng, pose) + list(range(len(seq), n)))
        return (torch.tensor(ids), torch.tensor(weights), torch.tensor(positions))

    def repeat_row(self, n, rng, shortest=8, longest=64, pool=None):
        """A random string of `shortest` to `longest` tokens (drawn from
        `pool` without repeats; default: any id but the three specials)
        repeated to fill n tokens, the repeats weighted 1: the copying
        (induction) the tasks rest on, learned much sooner from this than
        from the answers alone."""
        if pool is None:
            k = rng.randint(shortest, longest)
            unit = [rng.randrange(3, self.tok.get_vocab_size()) for _ in range(k)]
        else:
            # No id twice in a string, so one id says where the copy is.
            k = rng.randint(min(shortest, len(pool)), min(longest, len(pool)))
            unit = rng.sample(pool, k)
        seq = [self.bos] + (unit * (n // k + 1))[:n - 1]
        w = [0.0] * k + [1.0] * (n - 1 - k)
        return seq, w

    def copy_pool(self, size, rng):
        """The ids phase 1 draws its strings from: the ten digits (every
        answer is made of them or of words) and `size` - 10 others."""
        digits = [self.tok.token_to_id(str(d)) for d in range(10)]
        rest = [i for i in range(3, self.tok.get_vocab_size()) if i not in digits]
        random.Random(rng).shuffle(rest)
        return digits + rest[:max(0, size - 10)]

    def positions(self, n, rng, pose):
        span = self.span
        if not pose or rng.random() < 1 / 3 or span <= n:
            return list(range(n))
        cut = rng.randrange(1, n - 16)
        u0 = rng.randrange(0, span - n + 1)
        u1 = rng.randrange(u0, span - n + 1)
        return [u0 + i for i in range(cut)] + [u1 + i for i in range(cut, n)]


def loss_fn(model, ids, weights, positions):
    logits = model(input_ids=ids, position_ids=positions).logits[:, :-1].float()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           ids[:, 1:].reshape(-1), reduction="none")
    # The answers' mean loss plus 0.1 x the document's: kept apart so the
    # answers' share does not shrink as documents grow.
    w = weights.reshape(-1)
    answer, document = w == 1.0, (w > 0) & (w < 1.0)
    if not document.any():
        return ce[answer].mean()
    return ce[answer].mean() + 0.1 * ce[document].mean()


@torch.no_grad()
def exact_match(model, data, n, per_task, seed, device):
    """Teacher-forced exact match (every answer token and EOS the argmax):
    equal to greedy decoding's exact match."""
    rng = random.Random(seed)
    out = {}
    for task in tasks.TASKS:
        ok = 0
        for _ in range(per_task):
            prompt, answer = data.sample(task, n, rng)
            ids = torch.tensor([prompt + answer], device=device)
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
            ok += int(logits.argmax(-1).tolist() == answer)
        out[task] = ok / per_task
    return out


@torch.no_grad()
def copy_accuracy(model, data, pool, device, rows=16, n=256, seed=4321):
    """Share of the repeats' tokens predicted right (argmax) on held-out
    repeated strings of 8 to 48 tokens drawn from `pool` (None: all ids)."""
    rng = random.Random(seed)
    batch = [data.repeat_row(n, rng, 8, 48, pool) for _ in range(rows)]
    ids = torch.tensor([b[0] for b in batch], device=device)
    w = torch.tensor([b[1] for b in batch], device=device)
    hit = (model(input_ids=ids).logits[:, :-1].argmax(-1) == ids[:, 1:]).float()
    return float((hit * w).sum() / w.sum())


def lengths_for(t, args):
    """Curriculum: sequence length (tokens) for task step t (0-based)."""
    frac = t / max(1, args.task_steps)
    choices = [n for n in (256, 512, 1024, 2048, 4096, 8192) if n <= args.max_train_tokens]
    top = max(1, min(len(choices), 1 + int(frac * len(choices) * 1.5)))
    return random.Random(args.seed * 7919 + t).choice(choices[:top])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--task_steps", type=int, default=3000,
                    help="phase 2: steps of the task mix")
    ap.add_argument("--tokens_per_step", type=int, default=8192)
    ap.add_argument("--max_train_tokens", type=int, default=2048)
    ap.add_argument("--position_span", type=int, default=32768)
    ap.add_argument("--rope_theta", type=float, default=10000.0,
                    help="10,000: copying formed ~4x sooner than at 500,000 (head dim 32)")
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--mlp", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv_heads", type=int, default=2)
    ap.add_argument("--tie_embeddings", type=int, default=1,
                    help="1: the LM head is the embedding (copying forms far sooner)")
    ap.add_argument("--extra_questions", type=int, default=4,
                    help="more questions after the first answer, for signal")
    ap.add_argument("--induction_steps", type=int, default=3000,
                    help="phase 1 at most: repeated random strings only")
    ap.add_argument("--induction_lr", type=float, default=3e-3)
    ap.add_argument("--pool_start", type=int, default=32,
                    help="phase 1 draws from this many ids first (the digits among them), "
                         "doubling each time copy accuracy reaches --pool_grow_at")
    ap.add_argument("--pool_grow_at", type=float, default=0.9)
    ap.add_argument("--repeat_fraction", type=float, default=0.25,
                    help="share of phase 2 sequences that are a repeated random string")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--eval_every", type=int, default=200)
    ap.add_argument("--eval_tokens", type=int, default=2048)
    ap.add_argument("--save_every", type=int, default=100)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="continue OUT's train_state.pt")
    ap.add_argument("--init_from", default="",
                    help="start from this checkpoint directory's weights, in phase 2")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(args.seed)
    tok = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    data = Data(tok, args.seed)
    data.span = args.position_span
    data.extra = args.extra_questions
    data.repeat_fraction = args.repeat_fraction
    vocab = tok.get_vocab_size()
    os.makedirs(args.out, exist_ok=True)
    state_path = os.path.join(args.out, "train_state.pt")
    config = model_config(args, vocab)
    model = LlamaForCausalLM(config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    # step: steps done; pool: phase 1's id pool size; phase2: the step phase 2
    # began at (None while in phase 1).
    prog = {"step": 0, "pool": args.pool_start, "phase2": None}
    if args.resume and os.path.exists(state_path):
        state = torch.load(state_path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        prog = state["progress"]
        data.rng.setstate(state["rng"])
        print(f"resumed at {prog}", flush=True)
    elif args.init_from:
        init = LlamaForCausalLM.from_pretrained(args.init_from, torch_dtype=torch.float32)
        for key in ("tie_word_embeddings", "rope_theta", "max_position_embeddings"):
            if getattr(init.config, key) != getattr(config, key):
                raise SystemExit(f"error: {args.init_from} has {key}={getattr(init.config, key)}, "
                                 f"these flags give {getattr(config, key)}")
        model.load_state_dict(init.state_dict())
        prog["phase2"] = 0
        print(f"weights from {args.init_from}; phase 2 from its start", flush=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters on {device}", flush=True)
    log = open(os.path.join(args.out, "train_log.jsonl"), "a")

    def write_log(rec):
        print(json.dumps(rec), flush=True)
        log.write(json.dumps(rec) + "\n")
        log.flush()

    def save():
        model.save_pretrained(args.out, safe_serialization=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "progress": prog,
                    "rng": data.rng.getstate(), "args": vars(args)}, state_path + ".tmp")
        os.replace(state_path + ".tmp", state_path)

    t0, seen = time.time(), 0
    while prog["phase2"] is None or prog["step"] - prog["phase2"] < args.task_steps:
        step = prog["step"]
        model.train()
        if prog["phase2"] is None:
            # Phase 1: random strings of 4 to 48 ids repeated, contiguous
            # positions, constant lr. The strings come from a small pool of
            # ids first (copying forms within a few hundred steps on 32 ids,
            # not on 1,024), widened as the copying generalises.
            pool = data.copy_pool(prog["pool"], args.seed) if prog["pool"] < vocab else None
            n, lr = 256, args.induction_lr * min(1.0, (step + 1) / args.warmup)
            rows = [data.repeat_row(n, data.rng, 4, 48, pool) for _ in range(16)]
            ids = torch.tensor([r[0] for r in rows], device=device)
            weights = torch.tensor([r[1] for r in rows], device=device)
            positions = torch.arange(n, device=device).expand(len(rows), n)
        else:
            # Phase 2: the task mix, with PoSE positions and the curriculum.
            t = step - prog["phase2"]
            n = lengths_for(t, args)
            rows = max(1, args.tokens_per_step // n)
            lr = args.lr * min(1.0, (t + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (
                1 + math.cos(math.pi * t / args.task_steps)))
            ids, weights, positions = (x.to(device) for x in data.batch(n, rows))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = loss_fn(model, ids, weights, positions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += ids.numel()
        prog["step"] = step = step + 1
        if step % 20 == 0:
            print(f"step {step} n={n} loss {loss.item():.4f} lr {lr:.2e} "
                  f"{seen / (time.time() - t0):.0f} tok/s", flush=True)
        if prog["phase2"] is None and step % 50 == 0:
            model.eval()
            acc = copy_accuracy(model, data, pool, device)
            write_log({"step": step, "phase": 1, "loss": loss.item(), "pool": prog["pool"],
                       "copy_accuracy": acc, "seconds": time.time() - t0})
            if acc >= args.pool_grow_at and prog["pool"] >= vocab or step >= args.induction_steps:
                prog["phase2"] = step
            elif acc >= args.pool_grow_at:
                prog["pool"] = min(vocab, prog["pool"] * 2)
        elif prog["phase2"] is not None and (
                (step - prog["phase2"]) % args.eval_every == 0
                or step - prog["phase2"] == args.task_steps):
            model.eval()
            em = exact_match(model, data, args.eval_tokens, 8, 12345, device)
            write_log({"step": step, "phase": 2, "loss": loss.item(), "n": n, "exact_match": em,
                       "copy_accuracy": copy_accuracy(model, data, None, device),
                       "seconds": time.time() - t0})
        if step % args.save_every == 0:
            save()
    save()
    print("done", flush=True)


if __name__ == "__main__":
    main()
