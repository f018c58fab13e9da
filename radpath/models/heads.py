"""Prediction heads: malignancy, ordinal grade and weakly supervised lesion localisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BinaryHead(nn.Module):
    """One logit per row: ``LayerNorm`` then ``Linear``.

    Args:
        dim: Input feature width.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B,)`` of features ``(B, D)``."""
        return self.fc(self.norm(x)).squeeze(-1)


class OrdinalHead(nn.Module):
    """CORAL ordinal regression (Cao, Mirjalili and Raschka 2020).

    A grade ``y`` in ``0..K-1`` is encoded as ``K-1`` binary tasks "is ``y > k``?". All
    tasks share one weight vector and differ only by their bias, which makes the predicted
    cumulative probabilities rank-consistent (never increasing in ``k``). The predicted
    grade is the number of tasks whose probability exceeds 0.5.

    Args:
        dim: Input feature width.
        num_classes: Number of ordered grades ``K`` (at least 2).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"an ordinal head needs at least 2 classes, got {num_classes}")
        self.num_classes = num_classes
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 1, bias=False)
        # Descending initial biases, as in coral-pytorch: the tasks start ordered.
        self.biases = nn.Parameter(
            torch.arange(num_classes - 1, 0, -1, dtype=torch.float32) / (num_classes - 1))

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, K-1)`` of the tasks "grade > k" for features ``(B, D)``."""
        return self.fc(self.norm(x)) + self.biases


class LocalisationHead(nn.Module):
    """Scores each patch token for lesion evidence, trainable from image labels alone.

    The image logit is a smooth maximum of the token scores (log-sum-exp pooling,
    Pinheiro and Collobert 2015): ``(1/r) log(mean_n exp(r s_n))``. An image label then
    supervises the tokens weakly, mostly through the highest-scoring ones, so a malignant
    image pushes its most suspicious patches up and a normal image pushes all of them down.
    ``r`` moves the pooling between the mean (r -> 0) and the maximum (r -> inf).

    Args:
        dim: Token width.
        hidden: Width of the scoring MLP.
        r: Sharpness of the log-sum-exp pooling.
    """

    def __init__(self, dim: int, hidden: int = 64, r: float = 5.0) -> None:
        super().__init__()
        if r <= 0:
            raise ValueError(f"the pooling sharpness r must be positive, got {r}")
        self.r = r
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, 1))

    def forward(self, tokens: Tensor) -> Tensor:
        """Scores ``(B, N)`` of patch tokens ``(B, N, D)`` (no CLS token)."""
        return self.mlp(tokens).squeeze(-1)

    @staticmethod
    def token_map(scores: Tensor, grid: tuple[int, int]) -> Tensor:
        """Token scores ``(B, gh * gw)`` as a map ``(B, gh, gw)`` (row-major, as timm)."""
        return scores.reshape(scores.shape[0], *grid)

    def image_logit(self, scores: Tensor, mask: Tensor | None = None) -> Tensor:
        """Log-sum-exp pooled logit ``(B,)`` of token scores ``(B, N)``.

        Args:
            scores: token scores.
            mask: ``(B, N)`` bool of the tokens to pool; a row without any gives 0.
        """
        if mask is None:
            count = torch.full(scores.shape[:1], scores.shape[1], device=scores.device)
            pooled = torch.logsumexp(self.r * scores, dim=1)
        else:
            count = mask.sum(dim=1)
            masked = (self.r * scores).masked_fill(~mask, float("-inf"))
            pooled = torch.logsumexp(masked.masked_fill(count[:, None] == 0, 0.0), dim=1)
        logit = (pooled - torch.log(count.clamp(min=1).to(scores.dtype))) / self.r
        return logit.masked_fill(count == 0, 0.0)


def highest_logit(logit: Tensor, mask: Tensor, fallback: Tensor) -> Tensor:
    """The highest valid logit of each unit ``(B,)``; ``fallback`` for units without."""
    highest = logit.masked_fill(~mask, torch.finfo(logit.dtype).min).amax(dim=1)
    return torch.where(mask.any(dim=1), highest, fallback)


def mean_tile_logit(tile_logit: Tensor, mask: Tensor, fallback: Tensor) -> Tensor:
    """Mean logit over each unit's valid tiles ``(B,)``; ``fallback`` for units without.
    ``tile_logit`` is already zero where ``mask`` is False, so a plain sum counts only
    the valid tiles."""
    count = mask.sum(dim=1)
    return torch.where(count > 0, tile_logit.sum(dim=1) / count.clamp(min=1), fallback)
