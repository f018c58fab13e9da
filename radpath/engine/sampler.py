"""Sampling units so every (label, domain) group is seen equally often."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def balanced_weights(labels: Sequence[int], domain_keys: Sequence[str]) -> torch.Tensor:
    """Per-unit weights making each (label, domain key) group equally likely.

    Args:
        labels: label code per unit; unknown labels (-1) form groups of their own.
        domain_keys: domain key per unit (e.g. ``"mammo_domain|histo_domain"``).

    Returns:
        float64 (N,) weights summing to 1, uniform inside each group.
    """
    groups = list(zip((int(label) for label in labels), domain_keys, strict=True))
    counts = Counter(groups)
    weights = [1.0 / (len(counts) * counts[g]) for g in groups]
    return torch.tensor(weights, dtype=torch.float64)


class BalancedUnitSampler(Sampler[int]):
    """Draws unit indices with replacement, each (label, domain key) group equally likely.

    The order depends only on ``seed + epoch``: call :meth:`set_epoch` before each epoch
    for a fresh, reproducible order.

    Args:
        labels: label code per unit (``dataset.labels``).
        domain_keys: domain key per unit (``dataset.domain_keys``).
        num_samples: indices per epoch; defaults to the number of units.
        seed: the base seed.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray, domain_keys: Sequence[str], *,
                 num_samples: int | None = None, seed: int = 0) -> None:
        if len(labels) == 0:
            raise ValueError("BalancedUnitSampler needs at least one unit, got 0")
        if len(labels) != len(domain_keys):
            raise ValueError(f"labels ({len(labels)}) and domain_keys ({len(domain_keys)}) "
                             "differ in length")
        self.num_samples = len(labels) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.weights = balanced_weights(list(labels), list(domain_keys))
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        draws = torch.multinomial(self.weights, self.num_samples, replacement=True,
                                  generator=generator)
        return iter(draws.tolist())

    def __len__(self) -> int:
        return self.num_samples
