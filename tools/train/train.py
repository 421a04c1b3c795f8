"""Trains kvfold's built-in model: a small Llama (transformers'
LlamaForCausalLM, so kvfold and transformers load the same files) that
answers the tools/tasks questions over long documents.

    python3 tools/train/train.py --tokenizer DIR --out DIR [--steps 2600] \
        [--device auto|cpu|cuda] [--threads 2] [--seed 0] [--resume]

Data recipe (generated on the fly from the seed, nothing downloaded): each
sequence is one task sample (tools/tasks/tasks.py: passkey, niah_multikey,
kv, vt, qa, equally often) rendered in the chat template of the tokenizer
("<|bos|>DOCUMENT\\n\\nQUESTION\\nAnswer: ANSWER<|eos|>"); the loss is the
answer tokens' mean plus 0.1 x the document's mean next-token loss (so the model
reads the haystack as language too). Lengths follow a curriculum (short
first, up to --max_train_tokens). Long-context generalisation: positions
are PoSE-style (Zhu et al. 2023): a sequence of n tokens is cut in two
chunks whose position ids are shifted by random skips, so relative
distances up to --position_span are seen while training on short
sequences; a third of the sequences keep contiguous positions.

Writes OUT/model.safetensors, config.json, generation_config.json and a
copy of the tokenizer files, plus OUT/train_log.jsonl (loss and held-out
teacher-forced exact match per task every --eval_every steps).
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
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1,
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

    def repeat_row(self, n, rng, shortest=8, longest=64):
        """A random string of `shortest` to `longest` tokens repeated to fill
        n tokens, the repeats weighted 1: the copying (induction) the tasks
        rest on, learned much sooner from this than from the answers alone."""
        k = rng.randint(shortest, longest)
        unit = [rng.randrange(3, self.tok.get_vocab_size()) for _ in range(k)]
        seq = [self.bos] + (unit * (n // k + 1))[:n - 1]
        w = [0.0] * k + [1.0] * (n - 1 - k)
        return seq, w

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


def lengths_for(step, args):
    """Curriculum: sequence length (tokens) for this task step."""
    frac = (step - args.induction_steps) / max(1, args.steps - args.induction_steps)
    choices = [n for n in (256, 512, 1024, 2048, 4096, 8192) if n <= args.max_train_tokens]
    top = max(1, min(len(choices), 1 + int(frac * len(choices) * 1.5)))
    return random.Random(args.seed * 7919 + step).choice(choices[:top])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=2600)
    ap.add_argument("--tokens_per_step", type=int, default=8192)
    ap.add_argument("--max_train_tokens", type=int, default=2048)
    ap.add_argument("--position_span", type=int, default=32768)
    ap.add_argument("--rope_theta", type=float, default=500000.0)
    ap.add_argument("--hidden", type=int, default=192)
    ap.add_argument("--mlp", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--kv_heads", type=int, default=2)
    ap.add_argument("--extra_questions", type=int, default=4,
                    help="more questions after the first answer, for signal")
    ap.add_argument("--induction_steps", type=int, default=600,
                    help="phase 1: steps of repeated random strings only")
    ap.add_argument("--induction_lr", type=float, default=1e-3)
    ap.add_argument("--repeat_fraction", type=float, default=0.25,
                    help="share of sequences that are a repeated random string")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--eval_every", type=int, default=200)
    ap.add_argument("--eval_tokens", type=int, default=2048)
    ap.add_argument("--save_every", type=int, default=200)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
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
    os.makedirs(args.out, exist_ok=True)
    state_path = os.path.join(args.out, "train_state.pt")
    model = LlamaForCausalLM(model_config(args, tok.get_vocab_size())).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    start = 0
    if args.resume and os.path.exists(state_path):
        state = torch.load(state_path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start = state["step"]
        data.rng.setstate(state["rng"])
        print(f"resumed at step {start}", flush=True)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.2f}M parameters on {device}", flush=True)
    log = open(os.path.join(args.out, "train_log.jsonl"), "a")

    def save(step):
        model.save_pretrained(args.out, safe_serialization=True)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(args.tokenizer, name), os.path.join(args.out, name))
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "rng": data.rng.getstate(), "args": vars(args)}, state_path + ".tmp")
        os.replace(state_path + ".tmp", state_path)

    t0, seen = time.time(), 0
    for step in range(start, args.steps):
        model.train()
        if step < args.induction_steps:
            # Phase 1: short random strings (4 to 12 tokens) repeated,
            # contiguous positions, constant lr, no clipping: copying starts
            # to form within a few hundred steps this way (from the task mix
            # alone it had not after 900 steps).
            n, lr = 128, args.induction_lr
            rows = [data.repeat_row(n, data.rng, 4, 12) for _ in range(32)]
            ids = torch.tensor([r[0] for r in rows], device=device)
            weights = torch.tensor([r[1] for r in rows], device=device)
            positions = torch.arange(n, device=device).expand(len(rows), n)
        else:
            # Phase 2: the task mix, with PoSE positions and the curriculum.
            t = step - args.induction_steps
            n = lengths_for(step, args)
            rows = max(1, args.tokens_per_step // n)
            lr = args.lr * min(1.0, (t + 1) / args.warmup) * (0.1 + 0.9 * 0.5 * (
                1 + math.cos(math.pi * t / (args.steps - args.induction_steps))))
            ids, weights, positions = (x.to(device) for x in data.batch(n, rows))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = loss_fn(model, ids, weights, positions)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step >= args.induction_steps:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        seen += ids.numel()
        if step % 20 == 0 or step < args.induction_steps and step % 50 == 0:
            print(f"step {step} n={n} loss {loss.item():.4f} lr {lr:.2e} "
                  f"{seen / (time.time() - t0):.0f} tok/s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            model.eval()
            em = exact_match(model, data, args.eval_tokens, 8, 12345, device)
            rec = {"step": step + 1, "loss": loss.item(), "n": n, "exact_match": em,
                   "seconds": time.time() - t0}
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            save(step + 1)
    print("done", flush=True)


if __name__ == "__main__":
    main()
