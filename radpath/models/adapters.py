"""Lightweight modality-specific adapters for a transformer shared by both modalities.

Two kinds, both initialised so that a freshly built adapter leaves the backbone's output
unchanged (training starts from the shared encoder and learns only the modality delta):

* :class:`BottleneckAdapter` (Houlsby et al. 2019): a residual down/up projection applied
  to the tokens after a transformer block.
* :class:`LoRALinear` (Hu et al. 2021): a low-rank update of a linear layer, here the
  attention ``qkv`` projection, with one update per modality.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from radpath.errors import RadpathError


class BottleneckAdapter(nn.Module):
    """Residual bottleneck ``x + up(gelu(down(norm(x))))`` with ``up`` zero-initialised.

    Args:
        dim: Token width.
        hidden: Bottleneck width ``r``.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        # The norm keeps the bottleneck's input scale independent of how large the
        # residual stream has grown at this depth.
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(self.act(self.down(self.norm(x))))


class LoRALinear(nn.Module):
    """A linear layer plus one low-rank update ``B_m A_m`` per modality ``m``.

    The wrapped layer's weights are shared by all modalities; only the update depends on
    the modality. Because a shared transformer block cannot tell which modality its
    input is, the owner sets :attr:`modality` before each forward pass
    (:class:`radpath.models.backbone.SharedBackbone` does so in ``forward_tokens``).
    This makes the layer stateful: one module must not run two modalities concurrently
    (e.g. from two threads); the backbone encodes the modalities one after the other.

    Args:
        base: The linear layer to adapt (e.g. a block's ``attn.qkv``).
        modalities: Names of the modalities, one update each.
        rank: Rank ``r`` of each update.
        alpha: Scale numerator; the update is multiplied by ``alpha / rank``.
    """

    def __init__(self, base: nn.Linear, modalities: Sequence[str], rank: int,
                 alpha: float | None = None) -> None:
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = rank
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.lora_a = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, base.in_features)) for m in modalities})
        self.lora_b = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(base.out_features, rank)) for m in modalities})
        for a in self.lora_a.values():
            # As in the LoRA paper: A random, B zero, so the update starts at exactly zero.
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        only = list(modalities)
        self.modality: str | None = only[0] if len(only) == 1 else None

    def forward(self, x: Tensor) -> Tensor:
        if self.modality is None:
            raise RadpathError("LoRALinear.modality must be set before the forward pass")
        a, b = self.lora_a[self.modality], self.lora_b[self.modality]
        return self.base(x) + (x @ a.t() @ b.t()) * self.scaling


def bottleneck_adapters(modalities: Sequence[str], depth: int, dim: int,
                        hidden: int) -> nn.ModuleDict:
    """One :class:`BottleneckAdapter` per modality per block: ``adapters[m][block]``."""
    return nn.ModuleDict({
        m: nn.ModuleList(BottleneckAdapter(dim, hidden) for _ in range(depth))
        for m in modalities
    })


def inject_lora(blocks: nn.Sequential, modalities: Sequence[str], rank: int) -> list[LoRALinear]:
    """Wrap every block's ``attn.qkv`` in a :class:`LoRALinear`; returns the wrappers."""
    wrappers = []
    for block in blocks:
        wrapper = LoRALinear(block.attn.qkv, modalities, rank)
        block.attn.qkv = wrapper
        wrappers.append(wrapper)
    return wrappers
