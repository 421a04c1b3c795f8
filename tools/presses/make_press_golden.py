#!/usr/bin/env python3
"""Golden reference data for kvfold's KV-cache compression policies.

For every case (press x tiny checkpoint) this script

  1. loads a tiny float32 checkpoint from tests/golden/<ckpt> with
     `from_pretrained(dir, torch_dtype=torch.float32, attn_implementation="eager")`,
  2. draws a fixed-seed 160-token document and an 8-token continuation
     (one seed per checkpoint, shared by all presses of that checkpoint),
  3. prefills the document once without a press (reference post-RoPE keys),
  4. prefills it again into a fresh DynamicCache inside `with press(model):`,
  5. recovers which document positions survived, per layer and KV head, by
     matching every kept key row bit-exactly against the reference keys
     (KVMerger: pivot positions recorded by the reference press itself),
  6. feeds the continuation on the compressed cache with position_ids
     160..167 (as kvpress's pipeline does) and records the logits,
  7. writes tests/golden/presses/<case>.json and prints a summary table.

Baselines (StreamingLLM, SnapKV, ObservedAttention, PyramidKV) are NVIDIA
kvpress 0.5.4.  KVMerger has no official code; `KVMergerRefPress` below is a
plain PyTorch reading of /work/shared/ALGORITHMS.md section 2, written as a
kvpress BasePress so that it runs through the same hooks.

Usage (separate venv, see tools/presses/requirements.txt and README.md):
    python tools/presses/make_press_golden.py --out tests/golden/presses
"""

import argparse
import importlib.metadata
import json
import math
import os
from dataclasses import dataclass, field

import torch
from kvpress import (BasePress, ObservedAttentionPress, PyramidKVPress,
                     SnapKVPress, StreamingLLMPress)
from transformers import AutoModelForCausalLM, DynamicCache

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "golden")
DOC_LEN, CONT_LEN = 160, 8
SEEDS = {"llama3_f32": 7101, "mistral_gqa_f32": 7202, "llama_attn_bias_f32": 7303}
KV = f"kvpress {importlib.metadata.version('kvpress')}"


# ----------------------------------------------------------------------------- KVMerger reference
@dataclass
class KVMergerRefPress(BasePress):
    """KVMerger (arXiv 2407.08454) per ALGORITHMS.md section 2, per layer and KV head.

    agg[j]  = attention probabilities on key j summed over all document queries
              and over the query heads of the KV group (h // (Hq // Hkv)).
    protect = last `window` tokens  U  top-`heavy` of agg among [0, T-window).
    sets    = literal loop: cur=[T-1]; for i=T-2..0: break if i or i+1 protected
              or cos(k_i, k_{i+1}) < eps, else extend.  eps is bisected on
              [-1.0001, 1.0001] until the set count equals `budget`.  If even the
              smallest eps yields more than `budget` sets, heavy hitters are released
              one at a time (least attended first) and the search is retried.
    merge   = pivot p = argmax agg in S (lowest position on ties);
              g_i = exp(-|k_p-k_i|^2 / (2 sigma^2)),
              w = g / sum g; key = sum w_i k_i at p's position; value = sum w_i v_i
              ('weighted_mean') or |S| * sum w_i v_i ('scaled_by_size').
    Slots are emitted in ascending position order. Computed in float64.
    """

    budget: int = 80
    window: int = 8
    heavy: int = 8
    sigma: float = 5.0
    value_norm: str = "weighted_mean"
    iters: int = 200
    records: dict = field(default_factory=dict)

    @staticmethod
    def partition(cos, protect, eps):
        T = len(protect)
        sets, cur = [], [T - 1]
        for i in range(T - 2, -1, -1):
            if protect[i] or protect[i + 1] or cos[i] < eps:
                sets.append(cur)
                cur = [i]
            else:
                cur.append(i)
        sets.append(cur)
        return [sorted(s) for s in reversed(sets)]  # ascending position order

    def merge_head(self, k, v, agg):
        T = k.shape[0]
        cos = ((k[:-1] * k[1:]).sum(-1) / (k[:-1].norm(dim=-1) * k[1:].norm(dim=-1))).tolist()
        order = torch.argsort(agg[: T - self.window], descending=True, stable=True).tolist()
        heavy = order[: self.heavy]
        hh_gap = (agg[order[self.heavy - 1]] - agg[order[self.heavy]]).item() / agg[order[self.heavy - 1]].item()
        released = 0
        while True:
            protect = [False] * T
            for i in list(range(T - self.window, T)) + heavy:
                protect[i] = True
            lo, hi = -1.0001, 1.0001
            if len(self.partition(cos, protect, lo)) <= self.budget:
                break
            assert heavy, "window alone fragments the cache beyond the budget"
            heavy = heavy[:-1]  # release the least attended heavy hitter
            released += 1
        eps = lo
        sets = self.partition(cos, protect, eps)
        for _ in range(self.iters):
            if len(sets) == self.budget:
                break
            eps = 0.5 * (lo + hi)
            sets = self.partition(cos, protect, eps)
            if len(sets) > self.budget:
                hi = eps
            elif len(sets) < self.budget:
                lo = eps
        assert len(sets) == self.budget, f"bisection failed: {len(sets)} sets"
        # margin: merged pairs have cos >= eps, cos-broken pairs cos < eps.
        free = [i for i in range(T - 1) if not (protect[i] or protect[i + 1])]
        bounds = {s[0] for s in sets[1:]}  # i+1 starts a new set => pair (i, i+1) broken
        merged = [cos[i] for i in free if (i + 1) not in bounds]
        broken = [cos[i] for i in free if (i + 1) in bounds]
        cos_gap = (min(merged) if merged else 1.0) - (max(broken) if broken else -1.0)
        keys, vals, pivots, piv_gap = [], [], [], 1.0
        for s in sets:
            idx = torch.tensor(s)
            if len(s) > 1:  # how clearly the pivot wins inside its set
                a = torch.sort(agg[idx], descending=True).values
                piv_gap = min(piv_gap, ((a[0] - a[1]) / a[0]).item())
            p = s[int(torch.argmax(agg[idx]))]  # torch.argmax returns the first maximum
            g = torch.exp(-((k[idx] - k[p]) ** 2).sum(-1) / (2 * self.sigma**2))
            w = g / g.sum()
            keys.append(w @ k[idx])
            val = w @ v[idx]
            if self.value_norm == "scaled_by_size":
                val = len(s) * val
            else:
                assert self.value_norm == "weighted_mean"
            vals.append(val)
            pivots.append(p)
        return (torch.stack(keys), torch.stack(vals), pivots,
                dict(sets=[[s[0], s[-1]] for s in sets], eps=eps, released=released,
                     hh_rel_gap=hh_gap, cos_gap=cos_gap, piv_gap=piv_gap, heavy=sorted(heavy)))

    def compress(self, module, hidden_states, keys, values, attentions, kwargs):
        assert attentions is not None, "KVMergerRefPress needs eager attention weights"
        _, hkv, T, _ = keys.shape
        hq = attentions.shape[1]
        colsum = attentions[0].double().sum(dim=1)  # [Hq, T]: summed over queries
        agg = colsum.view(hkv, hq // hkv, T).sum(dim=1)  # [Hkv, T]: summed over the group
        out_k, out_v, rec = [], [], []
        for h in range(hkv):
            mk, mv, piv, info = self.merge_head(keys[0, h].double(), values[0, h].double(), agg[h])
            out_k.append(mk)
            out_v.append(mv)
            rec.append(dict(pivots=piv, merged_keys=mk.float(), **info))
        self.records[module.layer_idx] = rec
        nk = torch.stack(out_k)[None].to(keys.dtype).contiguous()
        nv = torch.stack(out_v)[None].to(values.dtype).contiguous()
        return nk, nv


# ----------------------------------------------------------------------------- helpers
def record_scores(press):
    """Wrap press.score so the scores each layer used for top-k are kept (for gap checks)."""
    press.seen = {}
    orig = press.score

    def score(module, hidden_states, keys, values, attentions, kwargs):
        assert attentions is not None, "eager attention weights expected"
        s = orig(module, hidden_states, keys, values, attentions, kwargs)
        press.seen[module.layer_idx] = s[0].detach().double().clone()
        return s

    press.score = score
    return press


def sig(x, digits=7):
    if isinstance(x, list):
        return [sig(y, digits) for y in x]
    return float(f"{x:.{digits}g}")


def cont_logits(model, cache, cont, stepwise):
    pos = torch.arange(DOC_LEN, DOC_LEN + CONT_LEN)[None]
    if not stepwise:
        return model(input_ids=cont, past_key_values=cache, position_ids=pos).logits[0]
    rows = []
    for i in range(CONT_LEN):
        rows.append(model(input_ids=cont[:, i:i + 1], past_key_values=cache, position_ids=pos[:, i:i + 1]).logits[0, 0])
    return torch.stack(rows)


def clone_cache(cache):
    c = DynamicCache()
    for l, layer in enumerate(cache.layers):
        c.update(layer.keys.clone(), layer.values.clone(), l)
    return c


def run_case(name, ckpt, press, ref_text, cfg_text, expect):
    path = os.path.join(GOLDEN, ckpt)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(SEEDS[ckpt])
    doc = torch.randint(0, vocab, (1, DOC_LEN), generator=g)
    cont = torch.randint(0, vocab, (1, CONT_LEN), generator=g)

    ref = DynamicCache()
    model(input_ids=doc, past_key_values=ref)
    ref_keys = [layer.keys[0].clone() for layer in ref.layers]  # [Hkv, T, d] post-RoPE

    if not isinstance(press, KVMergerRefPress):
        record_scores(press)
    cache = DynamicCache()
    with press(model):
        model(input_ids=doc, past_key_values=cache)

    n_layers, hkv = len(ref_keys), ref_keys[0].shape[0]
    kept, budgets, gaps, extra = [], [], [], {}
    for l in range(n_layers):
        ck = cache.layers[l].keys[0]
        budgets.append(ck.shape[1])
        assert ck.shape[1] == expect(l), f"{name}: layer {l} kept {ck.shape[1]} != {expect(l)}"
        row = []
        for h in range(hkv):
            if isinstance(press, KVMergerRefPress):
                rec = press.records[l][h]
                pos = rec["pivots"]
                assert torch.equal(ck[h], rec["merged_keys"]), "cache differs from reference merge"
                gaps.append(("hh", rec["hh_rel_gap"]))
                gaps.append(("cos", rec["cos_gap"]))
                gaps.append(("piv", rec["piv_gap"]))
            else:
                eq = (ck[h][:, None, :] == ref_keys[l][h][None, :, :]).all(-1)  # [kept, T]
                assert (eq.sum(1) == 1).all(), f"{name}: kept row not matched exactly once"
                pos = eq.float().argmax(1).tolist()
                s = press.seen[l][h]
                top = sorted(s.topk(len(pos)).indices.tolist())
                assert top == sorted(pos), f"{name}: recovered positions differ from score top-k"
                if len(pos) < DOC_LEN:
                    srt = torch.sort(s, descending=True).values
                    a, b = srt[len(pos) - 1].item(), srt[len(pos)].item()
                    gaps.append(("score", (a - b) / max(abs(a), 1e-30)))
            assert len(pos) == len(set(pos)) == expect(l)
            row.append(sorted(pos))
        kept.append(row)
    if isinstance(press, KVMergerRefPress):
        mk = [[press.records[l][h]["merged_keys"].tolist() for h in range(hkv)] for l in range(n_layers)]
        extra["merged_keys"] = sig(mk)
        extra["merge_sets"] = [[press.records[l][h]["sets"] for h in range(hkv)] for l in range(n_layers)]
        extra["eps"] = [[press.records[l][h]["eps"] for h in range(hkv)] for l in range(n_layers)]
        extra["heavy"] = [[press.records[l][h]["heavy"] for h in range(hkv)] for l in range(n_layers)]
        assert all(r["released"] == 0 for l in press.records for r in press.records[l])

    uniform = len(set(budgets)) == 1
    with torch.no_grad():
        one = cont_logits(model, clone_cache(cache), cont, stepwise=False)
        step = cont_logits(model, clone_cache(cache), cont, stepwise=True)
    diff = (one - step).abs().max().item()
    if uniform:
        assert diff < 1e-4, f"{name}: one-shot vs stepwise continuation differ by {diff}"
    logits = one if uniform else step

    out = {
        "case": name, "checkpoint": ckpt, "reference": ref_text, "cache_config": cfg_text,
        "doc_ids": doc[0].tolist(), "cont_ids": cont[0].tolist(),
        "kept": kept, "layer_budgets": budgets, **extra,
        "cont_logits_method": "one_shot" if uniform else "stepwise",
        "cont_logits": sig(logits.tolist()),
    }
    return out, dict(budgets=budgets, gaps=gaps, diff=diff, uniform=uniform)


def cases():
    """(name, ckpt, press factory, reference text, kvfold CacheConfig text, expected kept per layer)."""
    out = []
    for ck in ["llama3_f32", "mistral_gqa_f32", "llama_attn_bias_f32"]:
        out.append((f"streaming_{ck}", ck, lambda: StreamingLLMPress(compression_ratio=0.5, n_sink=4),
                    f"{KV} StreamingLLMPress(compression_ratio=0.5, n_sink=4)",
                    "slots: 80 streaming { sinks: 4 }", lambda l: 80))
        out.append((f"snapkv_{ck}", ck, lambda: SnapKVPress(compression_ratio=0.5, window_size=16, kernel_size=5),
                    f"{KV} SnapKVPress(compression_ratio=0.5, window_size=16, kernel_size=5)",
                    "slots: 80 snapkv { window: 16 kernel: 5 }", lambda l: 80))
        if ck != "llama_attn_bias_f32":
            out.append((f"observed_{ck}", ck, lambda: ObservedAttentionPress(compression_ratio=0.5),
                        f"{KV} ObservedAttentionPress(compression_ratio=0.5)",
                        "slots: 80 h2o { window: 0 average_over_queries: true }", lambda l: 80))
            for tag, r, b in [("", 0.5, (144, 16)), ("_r04", 0.4, (144, 48))]:
                if tag and ck != "llama3_f32":
                    continue
                out.append((f"pyramidkv{tag}_{ck}", ck,
                            (lambda r=r: PyramidKVPress(compression_ratio=r, window_size=16, kernel_size=5, beta=20)),
                            f"{KV} PyramidKVPress(compression_ratio={r}, window_size=16, kernel_size=5, beta=20)",
                            f"layer_slots: {b[0]} layer_slots: {b[1]} snapkv {{ window: 16 kernel: 5 }}",
                            (lambda l, b=b: b[l])))
        variants = [("weighted_mean", "")] + ([("scaled_by_size", " value_norm: SCALED_BY_SIZE")]
                                            if ck == "llama3_f32" else [])
        for vn, cfg in variants:
            nm = "kvmerger" if vn == "weighted_mean" else "kvmerger_scaled"
            out.append((f"{nm}_{ck}", ck, (lambda vn=vn: KVMergerRefPress(budget=80, window=8, heavy=8, sigma=5.0,
                                                                           value_norm=vn)),
                        f"tools/presses/make_press_golden.py KVMergerRefPress(budget=80, window=8, heavy=8, "
                        f"sigma=5.0, value_norm='{vn}') on {KV} BasePress; ALGORITHMS.md section 2",
                        f"slots: 80 kvmerger {{ window: 8 heavy: 8 sigma: 5{cfg} }}", lambda l: 80))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(GOLDEN, "presses"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    rows = []
    with torch.no_grad():
        for name, ck, make, ref_text, cfg, expect in cases():
            out, info = run_case(name, ck, make(), ref_text, cfg, expect)
            if name.startswith("streaming"):
                for layer in out["kept"]:
                    for pos in layer:
                        assert pos == list(range(4)) + list(range(DOC_LEN - 76, DOC_LEN)), name
            if name.startswith(("snapkv", "pyramidkv")):
                for layer in out["kept"]:
                    for pos in layer:
                        assert set(range(DOC_LEN - 16, DOC_LEN)) <= set(pos), name
            if name.startswith("pyramidkv"):
                assert len(set(out["layer_budgets"])) > 1, f"{name}: budgets do not differ"
            path = os.path.join(args.out, f"{name}.json")
            with open(path, "w") as f:
                json.dump(out, f, separators=(",", ":"))
                f.write("\n")
            size = os.path.getsize(path)
            assert size < 300_000, f"{path} is {size} bytes"
            rows.append((name, info, size))
    print(f"{'case':34s} {'budgets':10s} {'min rel score gap':>17s} {'min hh gap':>10s} {'min cos gap':>11s}"
          f" {'min piv gap':>11s}"
          f" {'1shot-step':>10s} {'logits':>8s} {'bytes':>7s}")
    for name, info, size in rows:
        def mn(kind):
            v = [g for k, g in info["gaps"] if k == kind]
            return f"{min(v):.3e}" if v else "-"
        print(f"{name:34s} {'/'.join(map(str, info['budgets'])):10s} {mn('score'):>17s} {mn('hh'):>10s} "
              f"{mn('cos'):>11s} {mn('piv'):>11s} {info['diff']:10.2e} {'1shot' if info['uniform'] else 'step':>8s} {size:7d}")
    worst = min(g for _, info, _ in rows for _, g in info["gaps"])
    print(f"minimum gap over all cases: {worst:.3e}")
    assert worst > 1e-5, "a selection is decided by float noise; change the seed"


if __name__ == "__main__":
    main()
