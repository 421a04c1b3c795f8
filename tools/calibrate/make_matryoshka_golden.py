#!/usr/bin/env python3
"""Write tests/golden/matryoshka/: MatryoshkaKV parity data for kvfold's C++
runtime and the "calibration learns" experiment on the built-in model.

  parity  (tiny random model tests/golden/lococo/model, referenced, not copied)
          parity.safetensors: a projection file with seeded random orthogonal
          bases and random means, allocations: all 16 (budget 1), a mixed one
          (its exact fraction), all 8 (budget 0.5).
          parity_golden.safetensors: the prompt, the unprojected HF logits, and
          per allocation the logits at every position and the cached k~, v~ of
          every (layer, KV head), computed in float64 and cast to f32.
  learn   (built-in model tools/model) calib.ids / heldout.ids made from the
          Debian license texts, then matryoshka_calibrate.py pca / train /
          adaptive / nll run as a user would (commands recorded in
          results.json), and the shipped tools/model/matryoshka.safetensors.

Self-checks (asserted): full-rank projected logits equal the HF logits (f32
and f64); the projection file round-trips through load_projection; the f32
parity data are within 1e-3 of f64 (the measured maxima are recorded).

Usage (from the repository root, CPU):
    python3 tools/calibrate/make_matryoshka_golden.py [--parts parity,learn]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

from make_lococo_golden import to_f64  # noqa: E402
from matryoshka import (Bases, ProjectedLM, check_full_rank, format_budgets, fraction,  # noqa: E402
                        load_projection, random_orthogonal, save_projection)

TINY_MODEL = "tests/golden/lococo/model"
BUILTIN_MODEL = "tools/model"
OUT = "tests/golden/matryoshka"
LICENSE_DIR = "/usr/share/common-licenses"
PARITY_SEED, PROMPT_SEED, PROMPT_LEN = 4101, 4102, 90
MEAN_SCALE = 0.5  # means ~ MEAN_SCALE x the RMS of the keys / values, so the mean terms matter
# per layer, per KV head: (r_k, r_v); fraction 75 / 128
MIXED_RANKS = [[[12, 5], [3, 16]], [[8, 12], [16, 3]]]
# the experiment on the built-in model
CALIB_FILES = ("GPL-3", "Apache-2.0", "GFDL-1.3", "LGPL-2.1")   # 8 windows of 512 each
HELDOUT_FILES = ("MPL-1.1", "MPL-2.0")                          # 4 windows of 1024 each
N_CALIB, CALIB_LEN, N_HELDOUT, HELDOUT_LEN = 32, 512, 8, 1024
LEARN_BUDGETS = "1,0.75,0.5,0.375,0.25"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def load(model_dir):
    return AutoModelForCausalLM.from_pretrained(os.path.join(REPO, model_dir), torch_dtype=torch.float32,
                                                attn_implementation="eager").eval()


def f64_model(model):
    """to_f64 (float64 weights and RMSNorm) plus a float64 rotary embedding
    (HF computes cos/sin in f32 even for a double model; default RoPE only)."""
    m = to_f64(model)
    rot = m.model.rotary_emb
    if getattr(rot, "rope_type", "default") != "default":
        raise SystemExit("f64 rotary: only default RoPE is supported here")
    d = rot.inv_freq.numel() * 2
    inv = 1.0 / (model.config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d))

    def forward(x, position_ids):
        freqs = position_ids[..., None].double() * inv
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)
    rot.forward = forward
    return m


# ----------------------------------------------------------------------------- parity
def make_parity(out_dir, summary):
    model = load(TINY_MODEL)
    cfg = model.config
    L, Hkv, d = cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim
    g = torch.Generator().manual_seed(PROMPT_SEED)
    ids = torch.randint(3, cfg.vocab_size, (PROMPT_LEN,), generator=g)
    ids[0] = 1  # BOS
    lm = ProjectedLM(model)
    with torch.no_grad():
        raw = lm.forward(ids, want=("raw_kv",))["raw_kv"]  # per layer ([1, Hkv, T, d], same)
    rms_k = torch.stack([k[0].pow(2).mean(dim=(1, 2)).sqrt() for k, _ in raw]).double()  # [L, Hkv]
    rms_v = torch.stack([v[0].pow(2).mean(dim=(1, 2)).sqrt() for _, v in raw]).double()
    g = torch.Generator().manual_seed(PARITY_SEED)
    bases = Bases(random_orthogonal((L, Hkv, d, d), g), random_orthogonal((L, Hkv, d, d), g),
                  MEAN_SCALE * rms_k[..., None] * torch.randn(L, Hkv, d, generator=g, dtype=torch.float64),
                  MEAN_SCALE * rms_v[..., None] * torch.randn(L, Hkv, d, generator=g, dtype=torch.float64))
    mixed = torch.tensor(MIXED_RANKS)
    ranks = [torch.full((L, Hkv, 2), d), mixed, torch.full((L, Hkv, 2), d // 2)]
    budgets = [1.0, fraction(mixed, d), 0.5]
    path = os.path.join(out_dir, "parity.safetensors")
    save_projection(path, bases, budgets, ranks, cfg, "model",
                    {"method": "random", "seed": PARITY_SEED, "mean_scale": MEAN_SCALE,
                     "data": "none (seeded random orthogonal bases, QR of a Gaussian with signs fixed; "
                             "means = 0.5 x per-head RMS of the keys/values on the parity prompt x N(0, 1))"})
    proj = load_projection(path, cfg)  # the golden data come from the file's values
    assert proj.budgets == budgets and all(torch.equal(a, b) for a, b in zip(proj.ranks, ranks))
    for a, b in ((proj.bases.key_basis, bases.key_basis), (proj.bases.key_mean, bases.key_mean)):
        assert (a.double() - b).abs().max() < 1e-6, "projection file does not round-trip"
    err32 = check_full_rank(model, ids)
    m64 = f64_model(model)
    err64 = check_full_rank(m64, ids, atol=1e-5)  # HF's eager softmax is f32 even in f64
    log(f"parity: full-rank vs HF logits: f32 {err32:.2e}, f64 {err64:.2e}")
    lm64, b64 = ProjectedLM(m64), proj.bases.detached(torch.float64)
    tensors, diffs = {"prompt": ids.float()}, {"logits": 0.0, "keys": 0.0, "values": 0.0}
    with torch.no_grad():
        # the unprojected model in f64 (our attention: HF's softmax runs in f32 even for f64)
        tensors["reference.logits"] = lm64.forward(ids)["logits"][0].float().contiguous()
        ref32 = model(ids.view(1, -1)).logits[0]
        diffs["reference_logits"] = (ref32.double() - tensors["reference.logits"].double()).abs().max().item()
        for i, r in enumerate(proj.ranks):
            o64 = lm64.forward(ids, b64, r, want=("cache",))
            o32 = lm.forward(ids, proj.bases, r, want=("cache",))
            tensors[f"alloc{i}.logits"] = o64["logits"][0].float().contiguous()
            diffs["logits"] = max(diffs["logits"], (o32["logits"][0].double() - o64["logits"][0]).abs().max().item())
            for l in range(L):
                for h in range(Hkv):
                    for j, name in enumerate(("keys", "values")):
                        t64, t32 = o64["cache"][l][h][j][0], o32["cache"][l][h][j][0]
                        assert t64.shape == (PROMPT_LEN, int(r[l, h, j]))
                        tensors[f"alloc{i}.layer{l}.head{h}.{name}"] = t64.float().contiguous()
                        diffs[name] = max(diffs[name], (t32.double() - t64).abs().max().item())
    full = (tensors["alloc0.logits"] - tensors["reference.logits"]).abs().max().item()
    assert full < 1e-5, f"full-rank golden logits differ from the reference by {full}"
    assert max(diffs.values()) < 1e-3, f"f32 vs f64 differ too much: {diffs}"
    meta = {"ids": ",".join(map(str, ids.tolist())), "projection": "parity.safetensors",
            "rank_budgets": format_budgets(budgets), "prompt_seed": str(PROMPT_SEED),
            "model": TINY_MODEL, "full_rank_vs_reference_max_abs": repr(full)}
    meta.update({f"f64_max_abs_diff.{k}": repr(v) for k, v in diffs.items()})
    save_file(tensors, os.path.join(out_dir, "parity_golden.safetensors"), metadata=meta)
    summary["parity"] = {"budgets": budgets, "f32_vs_hf_full_rank": err32, "f64_vs_hf_full_rank": err64,
                         "golden_full_rank_vs_reference": full, "f64_max_abs_diff": diffs}
    log(f"parity: budgets {format_budgets(budgets)}; |f32 - f64| {diffs}")


# ----------------------------------------------------------------------------- learn
def license_tokens(tok, name):
    """One license file as token ids: paragraphs reflowed to one line each (as
    tools/tasks/tasks.py does for the haystack), joined by newlines."""
    with open(os.path.join(LICENSE_DIR, name), encoding="utf-8", errors="replace") as f:
        paras = [" ".join(b.split()) for b in re.split(r"\n\s*\n", f.read())]
    return tok.encode("\n".join(p for p in paras if p), add_special_tokens=False).ids


def make_ids(tok, bos, files, count, length):
    """count sequences of `length` tokens: BOS + consecutive windows of
    length - 1 tokens, the same number from each file, from its start."""
    per, out = count // len(files), []
    for name in files:
        ids = license_tokens(tok, name)
        n = length - 1
        if len(ids) < per * n:
            raise SystemExit(f"{name}: {len(ids)} tokens, need {per * n}")
        out += [[bos] + ids[i * n:(i + 1) * n] for i in range(per)]
    return out


def run_cli(args, record):
    cmd = ["tools/calibrate/matryoshka_calibrate.py"] + args
    text = "python3 " + " ".join(cmd)
    log("$ " + text)
    t0 = time.time()
    res = subprocess.run([sys.executable] + cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if res.returncode:
        raise SystemExit(f"matryoshka_calibrate.py failed ({res.returncode})")
    record.append({"command": text, "wall_seconds": round(time.time() - t0, 1)})
    return json.loads(res.stdout)


def make_learn(out_dir, args, summary):
    from tokenizers import Tokenizer
    os.makedirs(out_dir, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(REPO, BUILTIN_MODEL, "tokenizer.json"))
    bos = tok.token_to_id("<|bos|>")
    for name, files, n, length in (("calib.ids", CALIB_FILES, N_CALIB, CALIB_LEN),
                                   ("heldout.ids", HELDOUT_FILES, N_HELDOUT, HELDOUT_LEN)):
        with open(os.path.join(out_dir, name), "w") as f:
            f.writelines(",".join(map(str, s)) + "\n" for s in make_ids(tok, bos, files, n, length))
    rel = lambda p: os.path.relpath(os.path.join(out_dir, p), REPO)
    calib, held, commands = rel("calib.ids"), rel("heldout.ids"), []
    base = ["--model", BUILTIN_MODEL, "--threads", str(args.threads)]
    run_cli(["pca"] + base + ["--data", calib, "--out", rel("pca.safetensors"), "--budgets", LEARN_BUDGETS,
                              "--granularity", "4", "--eigenvalues_out", rel("pca_eigenvalues.safetensors")],
            commands)
    report = run_cli(["train"] + base + ["--data", calib, "--init", rel("pca.safetensors"),
                                         "--out", rel("trained.safetensors"), "--budgets", LEARN_BUDGETS,
                                         "--granularity", "4", "--steps", str(args.steps), "--lr", repr(args.lr),
                                         "--batch", str(args.batch), "--seq_len", str(CALIB_LEN),
                                         "--seed", "0"], commands)
    train_info = {k: report[k] for k in ("final_loss", "train_seconds", "history")}
    report = run_cli(["adaptive"] + base + ["--data", calib, "--projection", rel("trained.safetensors"),
                                            "--out", rel("adaptive.safetensors"), "--granularity", "4",
                                            "--sequences", str(args.adaptive_sequences)], commands)
    adaptive_info = {k: report[k] for k in ("fractions", "hidden_mse", "ranks", "seconds")}
    results = {"unprojected": run_cli(["nll"] + base + ["--data", held], commands)["results"][0]}
    for name in ("pca", "trained", "adaptive"):
        rows = run_cli(["nll"] + base + ["--data", held, "--projection", rel(f"{name}.safetensors")],
                       commands)["results"]
        results[name] = {format_budgets([r["budget"]]): r for r in rows}
    table = {name: {b: r["nll_per_token"] for b, r in rows.items()} for name, rows in results.items()
             if name != "unprojected"}
    budgets = LEARN_BUDGETS.split(",")
    # at budget 1 both are the exact model: equal up to rounding (~1e-8)
    goals = {"trained_le_pca": {b: table["trained"][b] <= table["pca"][b] + 1e-6 for b in budgets}}
    wins = sum(table["adaptive"][b] < table["trained"][b] for b in budgets if b != "1")
    shipped = "adaptive" if wins > (len(budgets) - 1) / 2 else "trained"
    shutil.copy(os.path.join(out_dir, f"{shipped}.safetensors"),
                os.path.join(REPO, BUILTIN_MODEL, "matryoshka.safetensors"))
    out = {"heldout_nll_per_token": {"unprojected": results["unprojected"]["nll_per_token"], **table},
           "goals": goals, "shipped": {"file": f"{BUILTIN_MODEL}/matryoshka.safetensors", "copy_of": shipped,
                                       "adaptive_better_at": wins, "of_budgets_below_1": len(budgets) - 1},
           "details": results, "train": train_info, "adaptive": adaptive_info, "commands": commands,
           "setup": {"model": BUILTIN_MODEL, "calib_files": list(CALIB_FILES),
                     "heldout_files": list(HELDOUT_FILES), "license_dir": LICENSE_DIR,
                     "calib": f"{N_CALIB} x {CALIB_LEN} tokens (BOS + 511 consecutive tokens, 8 windows per file)",
                     "heldout": f"{N_HELDOUT} x {HELDOUT_LEN} tokens (BOS + 1023, 4 windows per file)",
                     "text": "paragraphs reflowed to one line, joined by newlines, no special tokens"}}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    summary["learn"] = {k: out[k] for k in ("heldout_nll_per_token", "goals", "shipped")}
    log("learn: held-out NLL/token " + json.dumps(out["heldout_nll_per_token"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, OUT))
    p.add_argument("--parts", default="parity,learn", help="comma list of parity, learn")
    p.add_argument("--steps", type=int, default=600, help="learn: training steps")
    p.add_argument("--lr", type=float, default=1e-3, help="learn: training lr")
    p.add_argument("--batch", type=int, default=4, help="learn: samples per training step")
    p.add_argument("--adaptive_sequences", type=int, default=4, help="learn: sequences the search measures")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= {"parity", "learn"}:
        p.error(f"--parts: unknown part(s) {sorted(parts - {'parity', 'learn'})}")
    torch.set_num_threads(args.threads)
    summary = {}
    if "parity" in parts:
        os.makedirs(args.out, exist_ok=True)
        make_parity(args.out, summary)
    if "learn" in parts:
        make_learn(os.path.join(args.out, "learn"), args, summary)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
