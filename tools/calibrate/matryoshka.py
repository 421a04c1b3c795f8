"""PyTorch reference for MatryoshkaKV (arXiv 2410.14731) as kvfold implements it.

MatryoshkaKV shrinks the feature axis of the KV cache: per layer and KV head,
orthogonal bases U_k, U_v [d, d] (columns ordered most important first) and
means mu_k, mu_v [d]; a cache keeps only the first r_k / r_v coordinates:

    q, k = RoPE(q, k, pos)                        # projection AFTER RoPE
    k~ = (k - mu_k) U_k[:, :r_k]    v~ = (v - mu_v) U_v[:, :r_v]   # cached
    q~ = q U_k[:, :r_k]
    logit = (q~ . k~ + q . mu_k) / sqrt(d)        # d = the full head_dim, causal
    o = (softmax(logit) v~) U_v[:, :r_v]^T + mu_v

Query head j uses KV head j // (heads / kv_heads). At r = d this is exactly
the original model. This file is the single definition on the Python side:
`ProjectedLM` (the projected forward), the projection file format
(`save_projection` / `load_projection`), PCA init, uniform and adaptive rank
allocation, Cayley training and `nll` (kvfold `score` semantics). The CLI is
matryoshka_calibrate.py; golden data come from make_matryoshka_golden.py.
Ideas from the paper (PCA init, Cayley-parametrised orthogonal bases, random
"Matryoshka" ranks during training, greedy per-head rank search), code ours.
"""

import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from lococo import FORMAT, FORMAT_VERSION, CompressorFileError

ORTHO_TOL = 1e-5       # max |U^T U - I| accepted in a file
FRACTION_TOL = 1e-9    # an allocation may exceed its budget by this much (rounding)


class ProjectionFileError(CompressorFileError):
    """A MatryoshkaKV file that is missing, corrupt, inconsistent or does not fit the model."""


def head_dim_of(cfg):
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def default_granularity(head_dim):
    """Rank step: 4 for small heads (d < 64), 16 from d = 64 on."""
    return 4 if head_dim < 64 else 16


# ----------------------------------------------------------------------------- containers
@dataclass
class Bases:
    """Per (layer, KV head) bases [L, Hkv, d, d] (column j = j-th basis vector)
    and means [L, Hkv, d]. The tensors may require grad (training)."""
    key_basis: torch.Tensor
    value_basis: torch.Tensor
    key_mean: torch.Tensor
    value_mean: torch.Tensor

    def detached(self, dtype=torch.float32):
        return Bases(*(t.detach().to(dtype).clone() for t in
                       (self.key_basis, self.value_basis, self.key_mean, self.value_mean)))


@dataclass
class Projection:
    """What a projection file holds: bases, and allocations (ranks int64
    [L, Hkv, 2], last axis K then V) with their budgets (descending)."""
    bases: Bases
    budgets: List[float]
    ranks: List[torch.Tensor]
    metadata: dict = field(default_factory=dict)

    def allocation(self, budget):
        """Index of the allocation stored for `budget` (within 1e-6)."""
        for i, b in enumerate(self.budgets):
            if abs(b - budget) <= 1e-6:
                return i
        raise ValueError(f"no allocation for budget {budget}; the file has {format_budgets(self.budgets)}")


def fraction(ranks, head_dim):
    """Fraction of the cached features kept: sum of ranks / (2 L Hkv d)."""
    r = torch.as_tensor(ranks)
    return r.sum().item() / (r.numel() * head_dim)


def format_budgets(budgets):
    """'1,0.75,0.5': shortest round-trip repr of each float, '1.0' written '1'."""
    out = []
    for b in budgets:
        s = repr(float(b))
        out.append(s[:-2] if s.endswith(".0") else s)
    return ",".join(out)


def orthonormalize(u):
    """Closest-in-spirit orthonormal matrices: QR in float64, signs fixed so
    that R has a positive diagonal (keeps each column's direction)."""
    q, r = torch.linalg.qr(u.double())
    s = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    s[s == 0] = 1.0
    return q * s.unsqueeze(-2)


def full_ranks(layers, heads, d):
    return torch.full((layers, heads, 2), d, dtype=torch.long)


def uniform_allocation(layers, heads, d, budget, granularity):
    """Every rank = budget * d rounded to a multiple of `granularity` (at least
    one step); rounded down instead when rounding up would exceed the budget."""
    step = max(1, min(granularity, d))
    if budget * d < step - 1e-9:
        raise ValueError(f"budget {budget} keeps fewer than {step} of {d} features (the rank granularity)")
    r = max(step, int(round(budget * d / step)) * step)
    if r / d > budget + FRACTION_TOL:
        r = max(step, int(math.floor(budget * d / step + 1e-9)) * step)
    return torch.full((layers, heads, 2), min(r, d), dtype=torch.long)


# ----------------------------------------------------------------------------- the model
class ProjectedLM:
    """Runs a Hugging Face Llama-family causal LM with the projected attention.

    Reuses the HF model's embeddings, norms, q/k/v/o projections, rotary
    embedding, MLP and lm_head; the attention (eager, causal, one whole
    sequence per row of the batch from position 0) is done here. With
    bases=None it is the plain, unprojected attention.
    """

    def __init__(self, hf_model):
        self.hf = hf_model
        cfg = hf_model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = head_dim_of(cfg)
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    def embed(self, ids):
        """ids [B, T] (or [T]) -> (h [B, T, hidden], (cos, sin))."""
        m = self.hf.model
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.hf.device)
        ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
        h = m.embed_tokens(ids)
        pos = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        rotary = getattr(m, "rotary_emb", None) or m.layers[0].self_attn.rotary_emb
        return h, rotary(h, pos)

    def _attention(self, layer, attn, x, rope, bases, ranks, out):
        B, T, _ = x.shape
        H, Hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        G = H // Hkv
        q = attn.q_proj(x).view(B, T, H, d).transpose(1, 2)
        k = attn.k_proj(x).view(B, T, Hkv, d).transpose(1, 2)
        v = attn.v_proj(x).view(B, T, Hkv, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rope)  # [B, H, T, d], [B, Hkv, T, d]
        if "raw_kv" in out:
            out["raw_kv"].append((k.detach(), v.detach()))
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        heads, cached = [], []
        for g in range(Hkv):
            qg, kg, vg = q[:, g * G:(g + 1) * G], k[:, g], v[:, g]  # [B, G, T, d], [B, T, d]
            if bases is None:
                scores = qg @ kg.unsqueeze(1).transpose(-1, -2)
            else:
                rk, rv = int(ranks[layer][g][0]), int(ranks[layer][g][1])
                uk = bases.key_basis[layer, g, :, :rk].to(x.dtype)
                uv = bases.value_basis[layer, g, :, :rv].to(x.dtype)
                mk, mv = bases.key_mean[layer, g].to(x.dtype), bases.value_mean[layer, g].to(x.dtype)
                kt, vt = (kg - mk) @ uk, (vg - mv) @ uv  # what the cache holds: [B, T, r]
                cached.append((kt, vt))
                # q . k = q~ . k~ + q . mu_k at full rank; the last term is the same for all keys
                scores = (qg @ uk) @ kt.unsqueeze(1).transpose(-1, -2) + (qg @ mk).unsqueeze(-1)
            scores = (scores / math.sqrt(d)).masked_fill(~causal, float("-inf"))
            probs = torch.softmax(scores.to(torch.promote_types(scores.dtype, torch.float32)), dim=-1)
            probs = probs.to(x.dtype)
            if bases is None:
                heads.append(probs @ vg.unsqueeze(1))
            else:
                heads.append((probs @ vt.unsqueeze(1)) @ uv.transpose(0, 1) + mv)  # [B, G, T, d]
        if "cache" in out:
            out["cache"].append(cached)
        o = torch.cat(heads, dim=1).transpose(1, 2).reshape(B, T, H * d)
        return attn.o_proj(o)

    def run_layers(self, h, rope, bases=None, ranks=None, first=0, out=None):
        """Layers first.. on hidden states h entering layer `first`; returns the
        final hidden state after the last layer (before the final norm).
        out: dict whose present keys are filled: 'inputs' (h entering each layer),
        'cache' (per layer, per KV head (k~, v~)), 'raw_kv' (post-RoPE k, v)."""
        out = {} if out is None else out
        layers = self.hf.model.layers
        for li in range(first, self.num_layers):
            if "inputs" in out:
                out["inputs"].append(h)
            block = layers[li]
            h = h + self._attention(li, block.self_attn, block.input_layernorm(h), rope, bases, ranks, out)
            h = h + block.mlp(block.post_attention_layernorm(h))
        return h

    def forward(self, ids, bases: Optional[Bases] = None, ranks=None, want=()):
        """ids [B, T] or [T] -> dict with 'logits' [B, T, V] (at least f32) and,
        if named in `want`: 'hidden' (after the final norm), 'cache', 'raw_kv',
        'inputs' (see run_layers)."""
        if bases is not None and ranks is None:
            ranks = full_ranks(self.num_layers, self.num_kv_heads, self.head_dim)
        out = {w: [] for w in want if w in ("cache", "raw_kv", "inputs")}
        h, rope = self.embed(ids)
        hidden = self.hf.model.norm(self.run_layers(h, rope, bases, ranks, 0, out))
        logits = self.hf.lm_head(hidden)
        out["logits"] = logits.to(torch.promote_types(logits.dtype, torch.float32))
        if "hidden" in want:
            out["hidden"] = hidden
        return out


def random_orthogonal(shape, generator, dtype=torch.float64):
    """Seeded random orthogonal matrices [..., d, d] (QR of a Gaussian, signs fixed)."""
    return orthonormalize(torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)


@torch.no_grad()
def check_full_rank(hf_model, ids, atol=1e-4, seed=0):
    """Self-check: random bases and means at full rank reproduce the HF logits.
    Returns the max abs difference (asserts <= atol)."""
    lm = ProjectedLM(hf_model)
    g = torch.Generator().manual_seed(seed)
    L, Hkv, d = lm.num_layers, lm.num_kv_heads, lm.head_dim
    dt = next(hf_model.parameters()).dtype
    bases = Bases(random_orthogonal((L, Hkv, d, d), g, dt), random_orthogonal((L, Hkv, d, d), g, dt),
                  torch.randn(L, Hkv, d, generator=g, dtype=torch.float64).to(dt),
                  torch.randn(L, Hkv, d, generator=g, dtype=torch.float64).to(dt))
    ids = torch.as_tensor(ids, dtype=torch.long).view(1, -1)
    ref = hf_model(ids.to(hf_model.device)).logits[0]
    got = lm.forward(ids, bases)["logits"][0]
    plain = lm.forward(ids)["logits"][0]
    err = max((got - ref).abs().max().item(), (plain - ref).abs().max().item())
    assert err <= atol, f"full-rank projected logits differ from HF by {err} (> {atol})"
    return err


# ----------------------------------------------------------------------------- file format
def save_projection(path, bases: Bases, budgets, ranks, model_config, model_name, calibration=None):
    """Write kvfold's compressor file, method matryoshka. The bases are
    re-orthonormalised in float64 first; everything is validated."""
    cfg = model_config
    L, Hkv, d = cfg.num_hidden_layers, cfg.num_key_value_heads, head_dim_of(cfg)
    kb, vb = (orthonormalize(b.detach()).float() for b in (bases.key_basis, bases.value_basis))
    km, vm = (m.detach().float() for m in (bases.key_mean, bases.value_mean))
    ranks = [torch.as_tensor(r, dtype=torch.long).reshape(L, Hkv, 2) for r in ranks]
    budgets = [float(b) for b in budgets]
    proj = Projection(Bases(kb, vb, km, vm), budgets, ranks)
    validate(proj, L, Hkv, d, path)
    tensors = {}
    for l in range(L):
        tensors[f"matryoshka.layers.{l}.key_basis"] = kb[l].contiguous()
        tensors[f"matryoshka.layers.{l}.value_basis"] = vb[l].contiguous()
        tensors[f"matryoshka.layers.{l}.key_mean"] = km[l].contiguous()
        tensors[f"matryoshka.layers.{l}.value_mean"] = vm[l].contiguous()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "method": "matryoshka",
            "model.name": model_name,
            "model.num_hidden_layers": str(L), "model.hidden_size": str(cfg.hidden_size),
            "model.num_attention_heads": str(cfg.num_attention_heads),
            "model.num_key_value_heads": str(Hkv), "model.head_dim": str(d),
            "model.vocab_size": str(cfg.vocab_size), "rank_budgets": format_budgets(budgets)}
    for i, r in enumerate(ranks):
        meta[f"ranks.{i}"] = ",".join(str(x) for x in r.flatten().tolist())
    for key, val in (calibration or {}).items():
        meta[f"calibration.{key}"] = str(val)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=meta)


def validate(proj: Projection, L, Hkv, d, path="projection"):
    """Ranks in [1, d], budgets strictly descending in (0, 1] and not exceeded,
    finite values, orthonormal bases. Raises ProjectionFileError."""
    def fail(msg):
        raise ProjectionFileError(f"{path}: {msg}")
    b = proj.budgets
    if not b:
        fail("no rank allocation")
    if len(proj.ranks) != len(b):
        fail(f"{len(b)} budgets but {len(proj.ranks)} rank lists")
    if any(not (0.0 < x <= 1.0) or not math.isfinite(x) for x in b):
        fail(f"rank_budgets {format_budgets(b)}: each must be in (0, 1]")
    if any(b[i] <= b[i + 1] for i in range(len(b) - 1)):
        fail(f"rank_budgets {format_budgets(b)} are not strictly descending")
    for i, r in enumerate(proj.ranks):
        if r.shape != (L, Hkv, 2):
            fail(f"ranks.{i}: want {2 * L * Hkv} values, got {r.numel()}")
        if r.min() < 1 or r.max() > d:
            fail(f"ranks.{i}: ranks must be in [1, {d}], got {r.min().item()}..{r.max().item()}")
        fr = fraction(r, d)
        if fr > b[i] + FRACTION_TOL:
            fail(f"ranks.{i} keep {fr!r} of the features, more than its budget {b[i]!r}")
    eye = torch.eye(d, dtype=torch.float64)
    for name, t in (("key_basis", proj.bases.key_basis), ("value_basis", proj.bases.value_basis)):
        if tuple(t.shape) != (L, Hkv, d, d) or not torch.isfinite(t).all():
            fail(f"{name}: want finite [{L}, {Hkv}, {d}, {d}]")
        u = t.double()
        err = (u.transpose(-1, -2) @ u - eye).abs().amax(dim=(-1, -2))  # [L, Hkv]
        if err.max() > ORTHO_TOL:
            l, h = divmod(int(err.argmax()), Hkv)
            fail(f"matryoshka.layers.{l}.{name} head {h} is not orthonormal (|U^T U - I| = {err.max():.2e})")
    for name, t in (("key_mean", proj.bases.key_mean), ("value_mean", proj.bases.value_mean)):
        if tuple(t.shape) != (L, Hkv, d) or not torch.isfinite(t).all():
            fail(f"{name}: want finite [{L}, {Hkv}, {d}]")


def load_projection(path, model_config=None) -> Projection:
    """Read and validate a MatryoshkaKV compressor file (and check it against a
    model config if given). Raises ProjectionFileError naming the problem."""
    from safetensors import safe_open
    if not os.path.isfile(path):
        raise ProjectionFileError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ProjectionFileError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT or meta.get("method") != "matryoshka":
        raise ProjectionFileError(f"{path}: metadata format/method is not {FORMAT}/matryoshka")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ProjectionFileError(f"{path}: unsupported format_version {meta.get('format_version')!r}")
    try:
        L, Hkv = int(meta["model.num_hidden_layers"]), int(meta["model.num_key_value_heads"])
        d = int(meta["model.head_dim"])
        budgets = [float(x) for x in meta["rank_budgets"].split(",")]
        ranks = [torch.tensor([int(x) for x in meta[f"ranks.{i}"].split(",")], dtype=torch.long)
                 for i in range(len(budgets))]
    except (KeyError, ValueError) as e:
        raise ProjectionFileError(f"{path}: bad or missing metadata field {e}") from None
    for i, r in enumerate(ranks):
        if r.numel() != 2 * L * Hkv:
            raise ProjectionFileError(f"{path}: ranks.{i} has {r.numel()} values, want 2 * layers * kv_heads "
                                      f"= {2 * L * Hkv}")
    if model_config is not None:
        want = (model_config.num_hidden_layers, model_config.num_key_value_heads, head_dim_of(model_config))
        if (L, Hkv, d) != want:
            raise ProjectionFileError(f"{path}: made for layers/kv_heads/head_dim {(L, Hkv, d)}, "
                                      f"the model has {want}")
    shapes = {"key_basis": (Hkv, d, d), "value_basis": (Hkv, d, d), "key_mean": (Hkv, d), "value_mean": (Hkv, d)}
    expected = {f"matryoshka.layers.{l}.{n}" for l in range(L) for n in shapes}
    extra = sorted(set(tensors) - expected)
    if extra:
        raise ProjectionFileError(f"{path}: unexpected tensor {extra[0]}")
    parts = {}
    for n, shape in shapes.items():
        per_layer = []
        for l in range(L):
            t = tensors.get(f"matryoshka.layers.{l}.{n}")
            if t is None or tuple(t.shape) != shape or t.dtype != torch.float32:
                got = "missing" if t is None else f"{t.dtype} {list(t.shape)}"
                raise ProjectionFileError(f"{path}: tensor matryoshka.layers.{l}.{n}: want F32 {list(shape)}, "
                                          f"got {got}")
            per_layer.append(t)
        parts[n] = torch.stack(per_layer)
    proj = Projection(Bases(parts["key_basis"], parts["value_basis"], parts["key_mean"], parts["value_mean"]),
                      budgets, [r.view(L, Hkv, 2) for r in ranks], meta)
    validate(proj, L, Hkv, d, path)
    return proj


# ----------------------------------------------------------------------------- PCA init
@torch.no_grad()
def pca_init(model, sequences):
    """Mean and covariance (float64) of post-RoPE keys and of values per (layer,
    KV head) over every token of every sequence (each fed whole from position
    0); bases = eigenvectors by descending eigenvalue (each column's largest
    |entry| made positive), means = the data means.
    Returns (Bases float32, {'key': eigvals [L, Hkv, d], 'value': ...} float64, tokens)."""
    lm = model if isinstance(model, ProjectedLM) else ProjectedLM(model)
    L, Hkv, d = lm.num_layers, lm.num_kv_heads, lm.head_dim
    s1 = {w: torch.zeros(L, Hkv, d, dtype=torch.float64) for w in ("key", "value")}
    s2 = {w: torch.zeros(L, Hkv, d, d, dtype=torch.float64) for w in ("key", "value")}
    n = 0
    for seq in sequences:
        raw = lm.forward(torch.as_tensor(seq).view(1, -1), want=("raw_kv",))["raw_kv"]
        for l, (k, v) in enumerate(raw):  # [1, Hkv, T, d]
            for w, x in (("key", k[0].double().cpu()), ("value", v[0].double().cpu())):
                s1[w][l] += x.sum(dim=1)
                s2[w][l] += x.transpose(-1, -2) @ x
        n += len(seq)
    out, eig = {}, {}
    for w in ("key", "value"):
        mean = s1[w] / n
        cov = s2[w] / n - mean.unsqueeze(-1) * mean.unsqueeze(-2)
        vals, vecs = torch.linalg.eigh(cov)  # ascending
        vals, vecs = vals.flip(-1), vecs.flip(-1)
        idx = vecs.abs().argmax(dim=-2, keepdim=True)
        vecs = vecs * torch.sign(vecs.gather(-2, idx))
        out[w], eig[w] = (vecs, mean), vals
    bases = Bases(out["key"][0].float(), out["value"][0].float(), out["key"][1].float(), out["value"][1].float())
    return bases, eig, n


# ----------------------------------------------------------------------------- training
def cayley(s):
    """Orthogonal (I + A)^{-1} (I - A) with A = S - S^T (equals (I - A)(I + A)^{-1})."""
    a = s - s.transpose(-1, -2)
    eye = torch.eye(s.shape[-1], dtype=s.dtype, device=s.device).expand_as(a)
    return torch.linalg.solve(eye + a, eye - a)


class CayleyBases(torch.nn.Module):
    """Trainable bases U = U0 Cayley(S) (S init 0, so U = U0) and means."""

    def __init__(self, init: Bases):
        super().__init__()
        self.register_buffer("u0_key", init.key_basis.detach().float().clone())
        self.register_buffer("u0_value", init.value_basis.detach().float().clone())
        self.s_key = torch.nn.Parameter(torch.zeros_like(self.u0_key))
        self.s_value = torch.nn.Parameter(torch.zeros_like(self.u0_value))
        self.key_mean = torch.nn.Parameter(init.key_mean.detach().float().clone())
        self.value_mean = torch.nn.Parameter(init.value_mean.detach().float().clone())

    def bases(self, dtype=None):
        """Current Bases (in the graph); dtype=torch.float64 for export."""
        dt = dtype or self.u0_key.dtype
        return Bases(self.u0_key.to(dt) @ cayley(self.s_key.to(dt)),
                     self.u0_value.to(dt) @ cayley(self.s_value.to(dt)),
                     self.key_mean.to(dt), self.value_mean.to(dt))


def sample_ranks(layers, heads, d, granularity, rng):
    """Independent uniform ranks from {g, 2g, ..., d} for every (layer, head, K|V)."""
    choices = list(range(granularity, d + 1, granularity))
    return torch.tensor([rng.choice(choices) for _ in range(layers * heads * 2)]).view(layers, heads, 2)


def train_cayley(hf_model, init: Bases, samples, steps, lr=1e-3, batch=4, granularity=4, seed=0,
                 kl_weight=0.25, log_every=0, teacher_cache_mb=2048, log=None):
    """Matryoshka training: each step draws random ranks for every (layer, KV
    head, K|V) and minimises kl_weight * KL(teacher || student) + (1 - kl_weight)
    * next-token CE on a batch of equal-length samples [N, T]; the teacher is the
    frozen unprojected model. Adam on S (Cayley) and the means.
    Returns (trained Bases float64, final mean loss, history)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    lm = ProjectedLM(hf_model)
    for p in hf_model.parameters():
        p.requires_grad_(False)
    hf_model.eval()
    dev = hf_model.device
    L, Hkv, d = lm.num_layers, lm.num_kv_heads, lm.head_dim
    params = CayleyBases(init).to(dev)
    opt = torch.optim.Adam(params.parameters(), lr=lr)
    rng, order_rng = random.Random(seed), random.Random(seed + 1)
    N, T = samples.shape
    V = hf_model.config.vocab_size
    keep_teacher = N * T * V * 4 <= teacher_cache_mb * 2 ** 20
    teacher = {}  # sample index -> teacher log-probs [T, V]

    def teacher_logp(idx):
        missing = [i for i in idx if i not in teacher]
        if missing:
            with torch.no_grad():
                lp = F.log_softmax(lm.forward(samples[missing].to(dev))["logits"], dim=-1)
            got = dict(zip(missing, lp))
            if keep_teacher:
                teacher.update(got)
        else:
            got = {}
        return torch.stack([teacher[i] if i in teacher else got[i] for i in idx])

    order, pos, window, history, t0 = [], 0, [], [], time.time()
    log_every = log_every or max(1, steps // 40)
    final = float("nan")
    for step in range(1, steps + 1):
        idx = []
        while len(idx) < min(batch, N):  # epochs over the samples in a fresh order
            if pos == len(order):
                order, pos = list(range(N)), 0
                order_rng.shuffle(order)
            idx.append(order[pos])
            pos += 1
        ids = samples[idx].to(dev)
        t_logp = teacher_logp(idx)
        ranks = sample_ranks(L, Hkv, d, granularity, rng)
        logits = lm.forward(ids, params.bases(), ranks)["logits"]
        s_logp = F.log_softmax(logits, dim=-1)
        kl = F.kl_div(s_logp.reshape(-1, V), t_logp.reshape(-1, V), log_target=True, reduction="batchmean")
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss = kl_weight * kl + (1.0 - kl_weight) * ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.append((loss.item(), kl.item(), ce.item()))
        if step % log_every == 0 or step == steps:
            m = [sum(x[i] for x in window) / len(window) for i in range(3)]
            final = m[0]
            history.append({"step": step, "loss": m[0], "kl": m[1], "ce": m[2]})
            log(f"step {step}/{steps} loss {m[0]:.4f} kl {m[1]:.4f} ce {m[2]:.4f} "
                f"{time.time() - t0:.0f}s")
            window = []
    with torch.no_grad():
        out = params.bases(torch.float64)
    return Bases(*(t.detach().cpu() for t in (out.key_basis, out.value_basis, out.key_mean, out.value_mean))), \
        final, history


# ----------------------------------------------------------------------------- adaptive ranks
@torch.no_grad()
def adaptive_allocations(hf_model, bases: Bases, ids, budgets, granularity, log=None):
    """Greedy rank search. From full ranks, repeatedly try lowering each (layer,
    KV head, K|V) rank that is > g by g, measure the mean squared difference of
    the final hidden state (after the final norm) from the unprojected model's
    on the batch `ids` [N, T], and keep the cheapest move. The allocation is
    recorded the first time the kept fraction is <= each budget.
    Returns (list of rank tensors, one per budget, and the per-budget MSEs)."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    lm = ProjectedLM(hf_model)
    L, Hkv, d = lm.num_layers, lm.num_kv_heads, lm.head_dim
    g = granularity
    if min(budgets) < g / d - FRACTION_TOL:
        raise ValueError(f"budget {min(budgets)} is below {g}/{d}, the least the granularity allows")
    ids = torch.as_tensor(ids).to(hf_model.device)
    ref = lm.forward(ids, want=("hidden",))["hidden"]
    norm = hf_model.model.norm
    ranks = full_ranks(L, Hkv, d)
    h0, rope = lm.embed(ids)
    inputs = []  # hidden state entering each layer under the current ranks
    lm.run_layers(h0, rope, bases, ranks, 0, {"inputs": inputs})
    todo = sorted(((b, i) for i, b in enumerate(budgets)), reverse=True)
    found, errs, cur = [None] * len(budgets), [None] * len(budgets), 0.0
    t0 = time.time()
    while todo:
        fr = fraction(ranks, d)
        while todo and fr <= todo[0][0] + FRACTION_TOL:
            b, i = todo.pop(0)
            found[i], errs[i] = ranks.clone(), cur
            log(f"adaptive: budget {b} reached at fraction {fr:.4f}, hidden mse {cur:.3e} "
                f"({time.time() - t0:.0f}s)")
        if not todo:
            break
        best = None
        for l in range(L):
            for h in range(Hkv):
                for kv in range(2):
                    if ranks[l, h, kv] <= g:
                        continue
                    trial = ranks.clone()
                    trial[l, h, kv] -= g
                    out = norm(lm.run_layers(inputs[l], rope, bases, trial, l))
                    mse = (out - ref).pow(2).mean().item()
                    if best is None or mse < best[0]:
                        best = (mse, l, h, kv)
        cur, l, h, kv = best
        ranks[l, h, kv] -= g
        new_inputs = []
        lm.run_layers(inputs[l], rope, bases, ranks, l, {"inputs": new_inputs})
        inputs = inputs[:l] + new_inputs
    return found, errs


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def nll(model, projection=None, ranks=None, sequences=()):
    """kvfold `score` semantics: sum over sequences of -log p(tok_i | tok_<i)
    for i >= 1 (full cache, each sequence fed whole). `model`: a checkpoint
    directory, an HF model or a ProjectedLM; `projection`: Bases, a Projection
    (its bases are used) or None (unprojected); `ranks`: [L, Hkv, 2] (None =
    full rank). Returns (total nll, tokens scored)."""
    if isinstance(model, str):
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32,
                                                     attn_implementation="eager").eval()
    lm = model if isinstance(model, ProjectedLM) else ProjectedLM(model)
    bases = projection.bases if isinstance(projection, Projection) else projection
    total, count = 0.0, 0
    for seq in sequences:
        ids = torch.as_tensor(seq, dtype=torch.long).view(1, -1)
        logp = torch.log_softmax(lm.forward(ids, bases, ranks)["logits"][0, :-1].double(), dim=-1)
        tgt = ids[0, 1:].to(logp.device)
        total -= logp.gather(1, tgt.unsqueeze(1)).sum().item()
        count += len(tgt)
    return total, count
