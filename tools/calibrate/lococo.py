"""PyTorch reference for LoCoCo (arXiv 2406.05317) as kvfold implements it.

kvfold's C++ runtime holds, per layer and KV head, a fixed number of cache slots
(post-RoPE keys, values, the absolute position of each slot). LoCoCo shrinks a
layer back to M slots once it holds more than M + buffer: the `keep_hh` most
attended slots stay as they are, and `Mc` new slots are convex mixes of the
rest, with mixing weights produced by a small learned 1-D convolution over the
slots. This file is the single definition of those semantics on the Python
side: the trainer (calibrate.py) and the golden-data writer
(make_lococo_golden.py) both run through `compress_if_needed` and
`ChunkedLM.forward`, so what is trained is exactly what kvfold replays.

Differences from the official code (VITA-Group/LoCoCo, read, not copied):
  * GQA: the attention column sums of all query heads of a KV group are added
    (the official code is multi-head only).
  * Compression is eager (after the forward that made the cache too long) for
    inference and dumping, lazy (at the start of the next forward, inside its
    autograd graph) for training. Both use the same hh scores, so they give the
    same numbers; `ChunkedLM.forward(lazy=...)` picks one.

Everything here handles one sequence at a time (batch 1), as kvfold does.
"""

import math
import os
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

FORMAT = "kvfold-compressor"
FORMAT_VERSION = "1"
VARIANTS = {
    # variant: (hh_keep_rate, alpha init, alpha trained)
    "official": (0.5, 0.5, True),
    "pure": (0.0, 1.0, False),
}


class CompressorFileError(Exception):
    """A compressor file that is missing, corrupt or does not fit the model."""


# ----------------------------------------------------------------------------- the compressor
class LoCoCoCompressor(nn.Module):
    """Per-layer Conv1d(2*head_dim -> Mc, kernel k) + scalar alpha.

    One conv per layer, shared by all KV heads and by keys and values (the
    official design: heads are folded into the batch). `alpha` blends the
    learned soft weights with a hard one-hot pick of the most attended
    residual slots; it is a parameter only for the "official" variant.
    """

    def __init__(self, num_layers, head_dim, cache_slots, hh_keep_rate=0.5,
                 kernel_size=21, alpha_init=0.5, train_alpha=True, buffer=16,
                 seed=0, variant="official"):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            # padding (k-1)//2 keeps the slot count only for odd k.
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        if not 0.0 <= hh_keep_rate < 1.0:
            raise ValueError(f"hh_keep_rate must be in [0, 1), got {hh_keep_rate}")
        self.variant = variant
        self.cache_slots = int(cache_slots)
        self.hh_keep_rate = float(hh_keep_rate)
        self.compressed_slots = int(self.cache_slots * (1.0 - self.hh_keep_rate))
        self.keep_hh = self.cache_slots - self.compressed_slots
        if self.compressed_slots < 1:
            raise ValueError(f"cache_slots {cache_slots} with hh_keep_rate {hh_keep_rate} "
                             "leaves no compressed slot")
        self.kernel_size = int(kernel_size)
        self.head_dim = int(head_dim)
        self.buffer = int(buffer)
        self.convs = nn.ModuleList()
        # Seeded init without disturbing the caller's global RNG. The official
        # code overwrites the conv weight with a standard normal draw and keeps
        # PyTorch's default bias init; so do we.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for _ in range(num_layers):
                conv = nn.Conv1d(2 * head_dim, self.compressed_slots, self.kernel_size,
                                 padding=(self.kernel_size - 1) // 2)
                with torch.no_grad():
                    conv.weight.copy_(torch.randn(conv.weight.shape))
                self.convs.append(conv)
        self.alphas = nn.ParameterList(
            nn.Parameter(torch.full((1,), float(alpha_init)), requires_grad=train_alpha)
            for _ in range(num_layers))

    @classmethod
    def for_variant(cls, variant, num_layers, head_dim, cache_slots, kernel_size, buffer=16, seed=0):
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (official or pure)")
        rate, alpha, train_alpha = VARIANTS[variant]
        return cls(num_layers, head_dim, cache_slots, rate, kernel_size, alpha, train_alpha,
                   buffer, seed, variant)

    @property
    def num_layers(self):
        return len(self.convs)

    def mix_weights(self, layer, kr, vr, sel):
        """Wt [H, Mc, Lr] = (1 - alpha) * onehot(sel) + alpha * softmax(relu(conv([Kr;Vr])))."""
        x = torch.cat([kr, vr], dim=-1).transpose(1, 2)  # [H, 2d, Lr]
        soft = torch.softmax(F.relu(self.convs[layer](x)), dim=-1)  # [H, Mc, Lr]
        hard = torch.zeros_like(soft).scatter_(-1, sel.unsqueeze(-1), 1.0)
        alpha = self.alphas[layer]
        return (1.0 - alpha) * hard + alpha * soft


# ----------------------------------------------------------------------------- per-layer cache
@dataclass
class LayerState:
    """What kvfold holds for one layer: [H, L, d] keys/values, [H, L] positions,
    and [H, L] hh = attention column sums of the last forward (None before any)."""
    keys: Optional[torch.Tensor] = None
    values: Optional[torch.Tensor] = None
    positions: Optional[torch.Tensor] = None
    hh: Optional[torch.Tensor] = None

    @property
    def length(self):
        return 0 if self.keys is None else self.keys.shape[1]


@dataclass
class Cache:
    layers: List[LayerState]
    next_pos: int = 0


def lococo_split(hh, keep_hh, mc):
    """Selection step of LoCoCo for hh [H, L]: returns (hh_idx [H, keep_hh],
    residual_idx [H, Lr], sel [H, Mc] indices into residual), all ascending."""
    H, L = hh.shape
    hh_idx = torch.topk(hh, keep_hh, dim=-1).indices.sort(dim=-1).values
    keep = torch.zeros(H, L, dtype=torch.bool, device=hh.device).scatter_(-1, hh_idx, True)
    residual_idx = torch.arange(L, device=hh.device).expand(H, L)[~keep].view(H, L - keep_hh)
    hr = hh.gather(-1, residual_idx)
    sel = torch.topk(hr, mc, dim=-1).indices.sort(dim=-1).values
    return hh_idx, residual_idx, sel


def topk_margins(hh, keep_hh, mc):
    """Relative gaps (k-th minus (k+1)-th score, over max hh) of the two top-k
    picks, min over heads. A tiny gap means another implementation may pick a
    different slot; golden data must avoid that. inf when a pick is total."""
    top = hh.max(dim=-1).values
    out = []
    s = hh.sort(dim=-1, descending=True).values
    out.append(((s[:, keep_hh - 1] - s[:, keep_hh]) / top).min().item()
               if 0 < keep_hh < hh.shape[1] else math.inf)
    _, residual_idx, _ = lococo_split(hh, keep_hh, mc)
    r = hh.gather(-1, residual_idx).sort(dim=-1, descending=True).values
    out.append(((r[:, mc - 1] - r[:, mc]) / top).min().item() if mc < r.shape[1] else math.inf)
    return tuple(out)


def compress_if_needed(state: LayerState, comp: LoCoCoCompressor, layer: int) -> bool:
    """Shrink `state` to comp.cache_slots slots if it holds more than M + buffer.

    The result keeps the autograd graph of the conv/alpha (for training); callers
    that store it across chunks detach it. Returns whether it compressed.
    """
    M, mc, keep_hh = comp.cache_slots, comp.compressed_slots, comp.keep_hh
    if state.length <= M + comp.buffer:
        return False
    if state.hh is None:
        raise RuntimeError("compression needs the hh scores of the last forward")
    k, v, pos, hh = state.keys.detach(), state.values.detach(), state.positions, state.hh.detach()
    hh_idx, residual_idx, sel = lococo_split(hh, keep_hh, mc)
    d = k.shape[-1]
    gather = lambda t, idx: t.gather(1, idx.unsqueeze(-1).expand(-1, -1, d))
    kr, vr = gather(k, residual_idx), gather(v, residual_idx)
    w = comp.mix_weights(layer, kr, vr, sel)  # [H, Mc, Lr]
    state.keys = torch.cat([gather(k, hh_idx), w @ kr], dim=1)
    state.values = torch.cat([gather(v, hh_idx), w @ vr], dim=1)
    state.positions = torch.cat([pos.gather(1, hh_idx), pos.gather(1, residual_idx).gather(1, sel)], dim=1)
    state.hh = None  # scores belong to the old slots
    return True


def streaming_evict(state: LayerState, slots: int, sinks: int = 4, buffer: int = 0) -> bool:
    """StreamingLLM baseline: when L > slots + buffer keep the first `sinks` slots
    and the most recent `slots - sinks`, by slot (positions stay absolute)."""
    L = state.length
    if L <= slots + buffer:
        return False
    idx = torch.cat([torch.arange(sinks), torch.arange(L - (slots - sinks), L)]).to(state.keys.device)
    state.keys, state.values = state.keys[:, idx].detach(), state.values[:, idx].detach()
    state.positions, state.hh = state.positions[:, idx], None
    return True


def hh_drop(state: LayerState, slots: int, buffer: int = 16) -> bool:
    """The official code's 'hh' method (extra baseline): keep the `slots` most
    attended slots of the last forward, in slot order."""
    if state.length <= slots + buffer:
        return False
    idx = torch.topk(state.hh, slots, dim=-1).indices.sort(dim=-1).values
    d = state.keys.shape[-1]
    state.keys = state.keys.gather(1, idx.unsqueeze(-1).expand(-1, -1, d)).detach()
    state.values = state.values.gather(1, idx.unsqueeze(-1).expand(-1, -1, d)).detach()
    state.positions, state.hh = state.positions.gather(1, idx), None
    return True


# ----------------------------------------------------------------------------- the model
class ChunkedLM:
    """Runs a Hugging Face Llama-family causal LM chunk by chunk over a LayerState
    cache, reusing its norms, projections, MLP, rotary embedding and lm_head and
    doing the attention here (it must emit the hh column sums).

    policy(state, layer) -> bool shrinks a layer's cache (None = full cache).
    """

    def __init__(self, hf_model, policy: Optional[Callable[[LayerState, int], bool]] = None):
        self.hf = hf_model
        cfg = hf_model.config
        self.num_layers = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        self.policy = policy

    def new_cache(self) -> Cache:
        return Cache([LayerState() for _ in range(self.num_layers)])

    def _attention(self, attn, x, cos, sin, new_pos, state, lazy, layer):
        """Attention of one layer for a chunk x [C, hidden]; appends the chunk's
        K/V/positions to `state` and leaves hh of this forward in it."""
        C = x.shape[0]
        H, Hkv, d = self.num_heads, self.num_kv_heads, self.head_dim
        q = attn.q_proj(x).view(1, C, H, d).transpose(1, 2)
        k = attn.k_proj(x).view(1, C, Hkv, d).transpose(1, 2)
        v = attn.v_proj(x).view(1, C, Hkv, d).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        q, k, v = q[0], k[0], v[0]  # [H, C, d], [Hkv, C, d]
        if lazy and self.policy is not None and state.keys is not None:
            self.policy(state, layer)  # uses the previous forward's hh; conv in this graph
        if state.keys is None:
            keys, values, pos = k, v, new_pos
        else:
            keys = torch.cat([state.keys, k], dim=1)
            values = torch.cat([state.values, v], dim=1)
            pos = torch.cat([state.positions, new_pos], dim=1)
        L, G = keys.shape[1], H // Hkv
        scores = (q.view(Hkv, G, C, d) @ keys.unsqueeze(1).transpose(-1, -2)) / math.sqrt(d)
        # query i (0-based in the chunk) sees slots [0, L - C + i]
        ar = torch.arange(L, device=x.device)
        allowed = ar[None, :] <= (L - C + torch.arange(C, device=x.device))[:, None]
        scores = scores.masked_fill(~allowed, float("-inf"))
        # softmax in f32 at least (f64 when the whole model runs in f64 for checks)
        acc = torch.promote_types(scores.dtype, torch.float32)
        probs = torch.softmax(scores.to(acc), dim=-1)  # [Hkv, G, C, L]
        out = (probs.to(values.dtype) @ values.unsqueeze(1)).reshape(H, C, d).transpose(0, 1).reshape(C, H * d)
        # the stored cache is detached: one-step truncated backprop between chunks
        state.keys, state.values, state.positions = keys.detach(), values.detach(), pos
        state.hh = probs.detach().sum(dim=(1, 2))
        return attn.o_proj(out)

    def forward(self, ids, cache: Cache, lazy: bool = False) -> torch.Tensor:
        """Feed one chunk of token ids (1-D) at positions cache.next_pos.. ; returns
        logits [C, vocab] (float32). lazy=True: compress each layer at the start of
        its attention (training); lazy=False: after the forward (what kvfold holds)."""
        m = self.hf.model
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.hf.device).view(-1)
        C, p0 = ids.shape[0], cache.next_pos
        positions = torch.arange(p0, p0 + C, device=ids.device)
        new_pos = positions.unsqueeze(0).expand(self.num_kv_heads, C)
        h = m.embed_tokens(ids)
        # Llama/Qwen2 keep one rotary module on the model; Mistral (4.46) one per layer.
        rotary = getattr(m, "rotary_emb", None) or m.layers[0].self_attn.rotary_emb
        cos, sin = rotary(h, positions.unsqueeze(0))
        for li, block in enumerate(m.layers):
            h = h + self._attention(block.self_attn, block.input_layernorm(h), cos, sin, new_pos,
                                    cache.layers[li], lazy, li)
            h = h + block.mlp(block.post_attention_layernorm(h))
        logits = self.hf.lm_head(m.norm(h))
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        cache.next_pos = p0 + C
        if not lazy and self.policy is not None:
            for li, st in enumerate(cache.layers):
                if self.policy(st, li):
                    st.keys, st.values = st.keys.detach(), st.values.detach()
        return logits


# ----------------------------------------------------------------------------- scoring
@torch.no_grad()
def score_nll(lm: ChunkedLM, ids, chunk: int) -> float:
    """-sum_{i>=1} log p(ids[i] | ids[<i]), feeding ids[:-1] in chunks of `chunk`
    with eager compression, as kvfold's `score` does."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    cache, total = lm.new_cache(), 0.0
    for s in range(0, len(ids) - 1, chunk):
        inp = ids[s:min(s + chunk, len(ids) - 1)]
        logp = torch.log_softmax(lm.forward(inp, cache).double(), dim=-1)
        tgt = ids[s + 1:s + 1 + len(inp)].to(logp.device)
        total -= logp.gather(1, tgt.unsqueeze(1)).sum().item()
    return total


@torch.no_grad()
def check_against_hf(hf_model, ids, chunk: int, atol: float = 2e-4) -> float:
    """Self-check: with no compression, chunked logits equal the HF model's
    full-sequence logits. Returns the max abs difference (asserts <= atol)."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    ref = hf_model(ids.unsqueeze(0).to(hf_model.device)).logits[0].float()
    lm, cache = ChunkedLM(hf_model), None
    cache = lm.new_cache()
    got = torch.cat([lm.forward(ids[s:s + chunk], cache) for s in range(0, len(ids), chunk)])
    err = (got - ref).abs().max().item()
    assert err <= atol * max(1.0, ref.abs().max().item()), f"chunked vs HF logits differ by {err}"
    return err


# ----------------------------------------------------------------------------- file format
def save_compressor(comp: LoCoCoCompressor, path: str, model_config, model_name: str,
                    calibration: dict):
    """Write kvfold's compressor file (safetensors + string metadata)."""
    tensors = {}
    for l in range(comp.num_layers):
        tensors[f"lococo.layers.{l}.conv.weight"] = comp.convs[l].weight.detach().float().cpu().contiguous()
        tensors[f"lococo.layers.{l}.conv.bias"] = comp.convs[l].bias.detach().float().cpu().contiguous()
        tensors[f"lococo.layers.{l}.alpha"] = comp.alphas[l].detach().float().cpu().reshape(1).contiguous()
    cfg = model_config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "method": "lococo",
        "variant": comp.variant, "cache_slots": str(comp.cache_slots),
        "compressed_slots": str(comp.compressed_slots), "kernel_size": str(comp.kernel_size),
        "hh_keep_rate": repr(comp.hh_keep_rate), "buffer": str(comp.buffer),
        "model.name": model_name,
        "model.num_hidden_layers": str(cfg.num_hidden_layers),
        "model.hidden_size": str(cfg.hidden_size),
        "model.num_attention_heads": str(cfg.num_attention_heads),
        "model.num_key_value_heads": str(cfg.num_key_value_heads),
        "model.head_dim": str(head_dim),
        "model.vocab_size": str(cfg.vocab_size),
    }
    for key, val in calibration.items():
        meta[f"calibration.{key}"] = str(val)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=meta)


def load_compressor(path: str, model_config=None):
    """Read a compressor file; returns (LoCoCoCompressor, metadata dict).
    Raises CompressorFileError naming the file and the problem."""
    from safetensors import safe_open
    if not os.path.isfile(path):
        raise CompressorFileError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            meta = dict(f.metadata() or {})
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise CompressorFileError(f"{path}: not a readable safetensors file ({e})") from None
    if meta.get("format") != FORMAT or meta.get("method") != "lococo":
        raise CompressorFileError(f"{path}: metadata format/method is not {FORMAT}/lococo")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CompressorFileError(f"{path}: unsupported format_version {meta.get('format_version')!r}")
    try:
        M, mc, k = int(meta["cache_slots"]), int(meta["compressed_slots"]), int(meta["kernel_size"])
        rate, buffer = float(meta["hh_keep_rate"]), int(meta["buffer"])
        layers, head_dim = int(meta["model.num_hidden_layers"]), int(meta["model.head_dim"])
        variant = meta["variant"]
    except (KeyError, ValueError) as e:
        raise CompressorFileError(f"{path}: bad or missing metadata field {e}") from None
    if model_config is not None:
        want_d = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
        if (layers, head_dim) != (model_config.num_hidden_layers, want_d):
            raise CompressorFileError(f"{path}: made for {layers} layers x head_dim {head_dim}, the model has "
                                      f"{model_config.num_hidden_layers} x {want_d}")
    try:
        comp = LoCoCoCompressor(layers, head_dim, M, rate, k, 0.5, variant == "official", buffer, 0, variant)
    except ValueError as e:
        raise CompressorFileError(f"{path}: {e}") from None
    if comp.compressed_slots != mc:
        raise CompressorFileError(f"{path}: compressed_slots {mc} != int(cache_slots*(1-hh_keep_rate))")
    expected = {f"lococo.layers.{l}.{n}" for l in range(layers) for n in ("conv.weight", "conv.bias", "alpha")}
    extra = sorted(set(tensors) - expected)
    if extra:
        raise CompressorFileError(f"{path}: unexpected tensor {extra[0]} (metadata says {layers} layers)")
    with torch.no_grad():
        for l in range(layers):
            for name, dst in ((f"lococo.layers.{l}.conv.weight", comp.convs[l].weight),
                              (f"lococo.layers.{l}.conv.bias", comp.convs[l].bias),
                              (f"lococo.layers.{l}.alpha", comp.alphas[l])):
                t = tensors.get(name)
                if t is None or tuple(t.shape) != tuple(dst.shape) or t.dtype != torch.float32:
                    got = "missing" if t is None else f"{t.dtype} {list(t.shape)}"
                    raise CompressorFileError(f"{path}: tensor {name}: want F32 {list(dst.shape)}, got {got}")
                dst.copy_(t)
    return comp, meta
