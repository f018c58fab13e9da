"""MixStyle (Zhou et al., ICLR 2021) for vision-transformer tokens.

A domain's "style" lives largely in the first- and second-order statistics of shallow
features. MixStyle normalises each sample's features by its own statistics and
re-styles them with a convex mix of its statistics and a partner's, synthesising new
domains during training. For tokens (B, N, D) the statistics are taken per sample and
channel over the token axis N, in place of the spatial axes of a CNN feature map.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

MixMode = Literal["random", "crossdomain"]
MIX_MODES: tuple[str, ...] = ("random", "crossdomain")


def check_mixing(p: float, alpha: float, **choice: tuple[str, tuple[str, ...]]) -> None:
    """Refuse a mixing probability outside [0, 1], a Beta alpha that is not positive, or a
    named choice (``mix=(value, allowed)``) that is not one of those allowed."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    for name, (value, allowed) in choice.items():
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def cross_domain_partners(domains: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each sample, a random partner index from another known domain.

    A sample whose domain is unknown (-1), or which has no other-domain sample in the
    batch, gets a uniformly random partner instead.

    Args:
        domains: (B,) domain indices.
        rng: the random generator.

    Returns:
        A (B,) int array of partner indices (drawn with replacement, not a permutation).
    """
    size = len(domains)
    known = np.flatnonzero(domains >= 0)
    # Known samples sorted by domain: the other-domain candidates of a sample are this
    # list without its own domain's block, so one uniform draw below the candidates' count,
    # stepped over that block, picks one. O(B log B), where scoring every pair was O(B^2)
    # (3 s a step at B = 10,000).
    by_domain = known[np.argsort(domains[known], kind="stable")]
    sorted_domains = domains[by_domain]
    block_start = np.searchsorted(sorted_domains, domains, side="left")
    block_size = np.searchsorted(sorted_domains, domains, side="right") - block_start
    candidates = len(known) - block_size
    has_partner = (domains >= 0) & (candidates > 0)
    draw = np.floor(rng.random(size) * np.maximum(candidates, 1)).astype(np.int64)
    position = np.where(draw < block_start, draw, draw + block_size)
    partners = by_domain[np.clip(position, 0, max(len(known) - 1, 0))] if len(known) else draw
    fallback = rng.permutation(size)
    return np.where(has_partner, partners, fallback)


class TokenMixStyle(nn.Module):
    """MixStyle over the token axis of (B, N, D) ViT tokens; identity in eval mode.

    The module owns a NumPy generator, so two modules built with the same seed mix
    identically, whatever else consumes torch's global random state.

    Args:
        p: probability of mixing a given batch.
        alpha: parameter of the Beta(alpha, alpha) mixing weight.
        mix: "random" partners, or "crossdomain" partners from another domain.
        seed: seed of the module's generator; None draws one from torch's global
            generator, so ``torch.manual_seed`` before building the model fixes it.
        skip_tokens: leading tokens (the CLS token, registers) left unchanged and left
            out of the statistics.
        eps: added to the variance before the square root.
    """

    def __init__(self, p: float = 0.5, alpha: float = 0.1, mix: MixMode = "random",
                 seed: int | None = None, skip_tokens: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        check_mixing(p, alpha, mix=(mix, MIX_MODES))
        if skip_tokens < 0:
            raise ValueError(f"skip_tokens must be non-negative, got {skip_tokens}")
        self.p, self.alpha, self.mix = p, alpha, mix
        self.skip_tokens, self.eps = skip_tokens, eps
        self.last_perm: torch.Tensor | None = None
        self.last_lam: torch.Tensor | None = None
        self.reseed(seed)

    def reseed(self, seed: int | None) -> None:
        """Restart the module's generator from ``seed`` (None: from torch's global one)."""
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def extra_repr(self) -> str:
        return (f"p={self.p}, alpha={self.alpha}, mix={self.mix!r}, "
                f"skip_tokens={self.skip_tokens}, seed={self.seed}")

    def forward(self, x: torch.Tensor, domains: torch.Tensor | None = None) -> torch.Tensor:
        """Mix the token statistics of ``x`` with partners' (training only).

        Args:
            x: (B, N, D) tokens.
            domains: (B,) domain indices; required when ``mix`` is "crossdomain".

        Returns:
            Tokens of the same shape and dtype; ``x`` itself when not mixing.
        """
        if x.ndim != 3:
            raise ValueError(f"TokenMixStyle expects (B, N, D) tokens, got {tuple(x.shape)}")
        if self.mix == "crossdomain" and domains is None and self.training:
            raise ValueError("TokenMixStyle(mix='crossdomain') needs the batch's domains")
        self.last_perm = self.last_lam = None
        if not self.training or self.p == 0 or self._rng.random() >= self.p:
            return x
        batch, tokens = x.shape[0], x.shape[1] - self.skip_tokens
        # One sample has no partner; one token has no variance.
        if batch < 2 or tokens < 2:
            return x
        perm = self._partners(batch, domains)
        lam = self._rng.beta(self.alpha, self.alpha, size=(batch, 1, 1))
        self.last_perm = torch.from_numpy(perm).to(x.device)
        self.last_lam = torch.from_numpy(lam).to(device=x.device, dtype=torch.float32)
        head, body = x[:, :self.skip_tokens], x[:, self.skip_tokens:]
        mixed = self._restyle(body.float(), self.last_perm, self.last_lam)
        return torch.cat([head, mixed.to(x.dtype)], dim=1)

    def _partners(self, batch: int, domains: torch.Tensor | None) -> np.ndarray:
        """Partner indices for the batch, according to ``mix``."""
        if self.mix == "random":
            return self._rng.permutation(batch)
        assert domains is not None  # checked in forward
        if domains.shape != (batch,):
            raise ValueError(f"domains must be ({batch},), got {tuple(domains.shape)}")
        return cross_domain_partners(domains.detach().cpu().numpy(), self._rng)

    def _restyle(self, body: torch.Tensor, perm: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """Normalise by the own statistics, re-style with the mixed ones."""
        # Detached, as in the paper: the statistics are a style to copy, and letting the
        # gradient flow through them destabilises training.
        mu = body.mean(dim=1, keepdim=True).detach()
        sigma = (body.var(dim=1, keepdim=True) + self.eps).sqrt().detach()
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
        return (body - mu) / sigma * sigma_mix + mu_mix
