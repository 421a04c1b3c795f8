#!/usr/bin/env python3
"""MatryoshkaKV calibration for kvfold: PCA init, Cayley training, adaptive ranks, NLL.

Subcommands (see tools/calibrate/README.md, "MatryoshkaKV"):
  pca       PCA of post-RoPE keys / values per (layer, KV head) + uniform allocations
  train     Cayley training of the bases/means from an init file (PCA), uniform allocations
  adaptive  replace a file's allocations by a greedy per-head rank search (same bases)
  nll       held-out NLL per token at the file's budgets (kvfold `score` semantics)

Every subcommand reads token-id files (one sequence per line, ids separated by
commas/spaces) and writes a compressor file (method matryoshka) or JSON on
stdout; progress goes to stderr. User errors are one line and exit 1.

Example (the built-in model):
  python3 tools/calibrate/matryoshka_calibrate.py pca --model tools/model \\
      --data tests/golden/matryoshka/learn/calib.ids --out /tmp/pca.safetensors
"""

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from calibrate import UserError, check_writable, load_model, pick_device, read_ids_file  # noqa: E402
from matryoshka import (ProjectionFileError, adaptive_allocations, default_granularity,  # noqa: E402
                        format_budgets, fraction, head_dim_of, load_projection, nll, pca_init,
                        save_projection, train_cayley, uniform_allocation)

PROG = "matryoshka_calibrate"


def parse_budgets(text):
    try:
        b = [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if any(not (0.0 < x <= 1.0) for x in b):
        raise argparse.ArgumentTypeError(f"{text!r}: every budget must be in (0, 1]")
    if any(b[i] <= b[i + 1] for i in range(len(b) - 1)):
        raise argparse.ArgumentTypeError(f"{text!r}: budgets must be strictly descending")
    return b


def positive_int(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"want an integer >= 1, got {text!r}")
    return v


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, out=True):
        sp.add_argument("--model", required=True, help="HF checkpoint directory")
        sp.add_argument("--data", required=True, help="token-id sequences, one per line")
        if out:
            sp.add_argument("--out", required=True, help="projection file to write (.safetensors)")
        sp.add_argument("--device", default="cpu", help="cpu (default), auto, cuda or cuda:N")
        sp.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")

    def budgets(sp, default="1,0.75,0.5,0.25"):
        sp.add_argument("--budgets", type=parse_budgets, default=default and parse_budgets(default),
                        help="fractions of the cached features to keep, descending "
                             f"({default or 'those of --projection'})")
        sp.add_argument("--granularity", type=positive_int, default=None,
                        help="rank step g (default 4 for head_dim < 64, else 16); must divide head_dim")

    sp = sub.add_parser("pca", help="PCA init + uniform allocations")
    common(sp)
    budgets(sp)
    sp.add_argument("--eigenvalues_out", help="also write the eigenvalues and means (f64 safetensors)")

    sp = sub.add_parser("train", help="Cayley training from an init file")
    common(sp)
    budgets(sp)
    sp.add_argument("--init", required=True, help="initial projection file (e.g. from `pca`)")
    sp.add_argument("--steps", type=int, default=300)
    sp.add_argument("--lr", type=float, default=1e-3)
    sp.add_argument("--batch", type=positive_int, default=4, help="samples per step (4)")
    sp.add_argument("--seq_len", type=positive_int, default=512,
                    help="samples are consecutive windows of this many tokens (512); shorter rests dropped")
    sp.add_argument("--kl_weight", type=float, default=0.25, help="loss = w KL + (1 - w) CE (0.25)")
    sp.add_argument("--seed", type=int, default=0)

    sp = sub.add_parser("adaptive", help="greedy per-head rank allocations for a projection file")
    common(sp)
    budgets(sp, None)
    sp.add_argument("--projection", required=True, help="projection file (bases and means are kept)")
    sp.add_argument("--sequences", type=positive_int, default=4,
                    help="calibration sequences measured (the first N of --data, 4)")
    sp.add_argument("--seq_len", type=positive_int, default=512, help="their first N tokens (512)")

    sp = sub.add_parser("nll", help="NLL per token at the file's budgets (JSON on stdout)")
    common(sp, out=False)
    sp.add_argument("--projection", help="projection file (omit: the unprojected model)")
    sp.add_argument("--budget", type=float, help="only this budget (default: every stored one)")
    a = p.parse_args(argv)
    if a.cmd == "train":
        if a.steps < 0:
            p.error("--steps must be >= 0")
        if not (a.lr > 0 and math.isfinite(a.lr)):
            p.error(f"--lr must be a positive number, got {a.lr}")
        if not 0.0 <= a.kl_weight <= 1.0:
            p.error(f"--kl_weight must be in [0, 1], got {a.kl_weight}")
    return a


def log(msg):
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def granularity_for(args, d):
    g = args.granularity or default_granularity(d)
    if g > d or d % g:
        raise UserError(f"--granularity {g} must divide head_dim {d}")
    return g


def uniform(cfg, budgets, g):
    d = head_dim_of(cfg)
    try:
        return [uniform_allocation(cfg.num_hidden_layers, cfg.num_key_value_heads, d, b, g) for b in budgets]
    except ValueError as e:
        raise UserError(str(e)) from None


def read_projection(path, cfg):
    try:
        return load_projection(path, cfg)
    except ProjectionFileError as e:
        raise UserError(str(e)) from None


def write(path, bases, budgets, ranks, cfg, model_dir, calib):
    calib = {k: v for k, v in calib.items() if v is not None}
    try:
        save_projection(path, bases, budgets, ranks, cfg, os.path.basename(os.path.normpath(model_dir)), calib)
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None


def windows(seqs, n):
    """Consecutive, non-overlapping windows of exactly n tokens, as [N, n]."""
    out = [s[i:i + n] for s in seqs for i in range(0, len(s) - n + 1, n)]
    if not out:
        raise UserError(f"no sequence has {n} tokens; lower --seq_len")
    return torch.tensor(out, dtype=torch.long)


def cmd_pca(args, model, seqs):
    cfg, t0 = model.config, time.time()
    g = granularity_for(args, head_dim_of(cfg))
    ranks = uniform(cfg, args.budgets, g)
    bases, eig, ntok = pca_init(model, seqs)
    write(args.out, bases, args.budgets, ranks, cfg, args.model,
          {"method": "pca", "data": args.data, "tokens": ntok, "granularity": g,
           "allocation": "uniform"})
    if args.eigenvalues_out:
        from safetensors.torch import save_file
        save_file({"key_eigenvalues": eig["key"].contiguous(), "value_eigenvalues": eig["value"].contiguous(),
                   "key_mean": bases.key_mean.double().contiguous(),
                   "value_mean": bases.value_mean.double().contiguous()},
                  args.eigenvalues_out, metadata={"tokens": str(ntok), "data": args.data})
    return {"out": args.out, "tokens": ntok, "budgets": args.budgets,
            "fractions": [fraction(r, head_dim_of(cfg)) for r in ranks], "seconds": round(time.time() - t0, 1)}


def cmd_train(args, model, seqs):
    cfg = model.config
    g = granularity_for(args, head_dim_of(cfg))
    ranks = uniform(cfg, args.budgets, g)
    init = read_projection(args.init, cfg)
    samples = windows(seqs, args.seq_len)
    log(f"train: {len(samples)} samples of {args.seq_len} tokens, {args.steps} steps, batch {args.batch}, "
        f"lr {args.lr}, granularity {g}")
    torch.manual_seed(args.seed)
    t0 = time.time()
    bases, final, history = train_cayley(model, init.bases, samples, args.steps, args.lr, args.batch, g,
                                         args.seed, args.kl_weight, log=log)
    secs = time.time() - t0
    write(args.out, bases, args.budgets, ranks, cfg, args.model,
          {"method": "cayley", "init": args.init, "data": args.data, "steps": args.steps, "lr": repr(args.lr),
           "batch": args.batch, "seq_len": args.seq_len, "seed": args.seed, "granularity": g,
           "kl_weight": repr(args.kl_weight), "final_loss": repr(final), "allocation": "uniform"})
    return {"out": args.out, "steps": args.steps, "final_loss": None if math.isnan(final) else final,
            "train_seconds": round(secs, 1), "history": history}


def cmd_adaptive(args, model, seqs):
    cfg = model.config
    d = head_dim_of(cfg)
    g = granularity_for(args, d)
    proj = read_projection(args.projection, cfg)
    budgets = args.budgets or proj.budgets
    picked = [s[:args.seq_len] for s in seqs[:args.sequences]]
    if len({len(s) for s in picked}) != 1:
        raise UserError(f"the first {args.sequences} sequences of {args.data} need >= {args.seq_len} tokens "
                        "each (or lower --seq_len)")
    t0 = time.time()
    try:
        ranks, errs = adaptive_allocations(model, proj.bases, torch.tensor(picked), budgets, g,
                                           log=log)
    except ValueError as e:
        raise UserError(str(e)) from None
    calib = {k[len("calibration."):]: v for k, v in proj.metadata.items() if k.startswith("calibration.")}
    calib.update({"allocation": "adaptive", "adaptive.data": args.data, "adaptive.sequences": len(picked),
                  "adaptive.seq_len": len(picked[0]), "adaptive.granularity": g,
                  "adaptive.from": args.projection})
    write(args.out, proj.bases, budgets, ranks, cfg, args.model, calib)
    return {"out": args.out, "budgets": budgets, "fractions": [fraction(r, d) for r in ranks],
            "hidden_mse": errs, "ranks": [",".join(map(str, r.flatten().tolist())) for r in ranks],
            "seconds": round(time.time() - t0, 1)}


def cmd_nll(args, model, seqs):
    cfg = model.config
    rows = []
    if args.projection is None:
        total, n = nll(model, None, None, seqs)
        rows.append({"budget": None, "nll": total, "tokens": n, "nll_per_token": total / n})
    else:
        proj = read_projection(args.projection, cfg)
        which = range(len(proj.budgets))
        if args.budget is not None:
            try:
                which = [proj.allocation(args.budget)]
            except ValueError as e:
                raise UserError(f"{args.projection}: {e}") from None
        for i in which:
            total, n = nll(model, proj, proj.ranks[i], seqs)
            rows.append({"budget": proj.budgets[i], "fraction": fraction(proj.ranks[i], head_dim_of(cfg)),
                         "nll": total, "tokens": n, "nll_per_token": total / n})
    return {"projection": args.projection, "data": args.data, "results": rows}


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if getattr(args, "out", None):
        check_writable(args.out)
    for attr in ("init", "projection"):
        path = getattr(args, attr, None)
        if path and not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    model = load_model(args.model, device).eval()
    seqs = read_ids_file(args.data, model.config.vocab_size)
    run = {"pca": cmd_pca, "train": cmd_train, "adaptive": cmd_adaptive, "nll": cmd_nll}[args.cmd]
    result = run(args, model, seqs)
    if "budgets" in result:
        result["budgets"] = format_budgets(result["budgets"])
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(1)
