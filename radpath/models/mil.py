"""Multiple-instance pooling of a patient's bag of views or tiles."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GatedAttentionPool(nn.Module):
    """Gated attention pooling (Ilse, Tomczak and Welling, ICML 2018).

    Each instance ``x_k`` scores ``w^T (tanh(V x_k) * sigmoid(U x_k))``; the weights are the
    softmax of the scores over the valid instances, and the bag is their weighted sum.
    Masked instances get exactly zero weight; a bag with no valid instance pools to zeros
    with all-zero weights (no NaN), so units missing a modality pass through unharmed.

    Args:
        dim: Instance feature width ``D``.
        hidden: Width of the attention network.
    """

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.attention_v = nn.Linear(dim, hidden)
        self.attention_u = nn.Linear(dim, hidden)
        self.attention_w = nn.Linear(hidden, 1)

    def scores(self, x: Tensor) -> Tensor:
        """Unnormalised attention scores ``(B, K)`` of instances ``(B, K, D)``."""
        gated = torch.tanh(self.attention_v(x)) * torch.sigmoid(self.attention_u(x))
        return self.attention_w(gated).squeeze(-1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Pool a bag.

        Args:
            x: instances ``(B, K, D)``.
            mask: ``(B, K)`` bool, True for instances that exist; None means all exist.

        Returns:
            The pooled features ``(B, D)`` and the attention weights ``(B, K)``.
        """
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        scores = self.scores(x).masked_fill(~mask, float("-inf"))
        # A softmax over only -inf is NaN: give empty bags finite scores, then zero them.
        empty = ~mask.any(dim=1, keepdim=True)
        scores = scores.masked_fill(empty, 0.0)
        attention = torch.softmax(scores, dim=1) * mask
        pooled = torch.einsum("bk,bkd->bd", attention, x)
        return pooled, attention
