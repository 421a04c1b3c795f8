"""A minimal LoRA wrapper for nn.Linear (no peft dependency).

LoCoCo's post-training mode tunes q/k/v/o with LoRA (r=8) so the model can
adapt to reading a compressed cache. kvfold loads plain Hugging Face
checkpoints, so after training the low-rank update is merged back into the
base weight and the wrapper disappears (`merge_lora`).
"""

import math

import torch
import torch.nn as nn

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * x A^T B^T, with A ~ kaiming-uniform and B = 0,
    so training starts from the unchanged model (as in the LoRA paper / peft)."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: int = 16):
        super().__init__()
        self.base = base
        self.scale = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=base.weight.device,
                                               dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=base.weight.device,
                                               dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Linear:
        self.base.weight += (self.lora_B @ self.lora_A) * self.scale
        return self.base


def add_lora(hf_model, r: int = 8, alpha: int = 16):
    """Wrap q/k/v/o of every decoder layer; returns the LoRA parameters."""
    params = []
    for layer in hf_model.model.layers:
        attn = layer.self_attn
        for name in TARGETS:
            wrapped = LoRALinear(getattr(attn, name), r, alpha)
            setattr(attn, name, wrapped)
            params += [wrapped.lora_A, wrapped.lora_B]
    return params


def merge_lora(hf_model):
    """Fold every LoRALinear back into its nn.Linear (in place)."""
    for layer in hf_model.model.layers:
        attn = layer.self_attn
        for name in TARGETS:
            mod = getattr(attn, name)
            if isinstance(mod, LoRALinear):
                setattr(attn, name, mod.merged())
