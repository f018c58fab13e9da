"""Sampling units so every label, and within a label every domain, is seen equally often.

Training loaders draw through :class:`EpochTagged`, which hands each index to the dataset
together with the epoch it belongs to: the items' random draws depend on the epoch, and
persistent DataLoader workers (started once, with the dataset as it was then) cannot be
told the epoch any other way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


def balanced_weights(labels: Sequence[int],
                     modality_domains: Sequence[Mapping[str, str]]) -> torch.Tensor:
    """Per-unit weights: every label equally likely; within a label, every modality that
    label's units hold equally likely; within that, every domain of the modality.

    A unit takes a share from each modality it holds, so a pair counts for both of its
    domains. Grouping by the pair of domains instead would be wrong for pseudo-pairs,
    whose two domains are drawn apart: it made most groups single pairs, so that paired
    units crowded out the unpaired ones (mammography-only normal patients, a third of
    MIAS, got a tenth of its draws in the joint real-data recipe).

    Args:
        labels: label code per unit; unknown labels (-1) form a label of their own.
        modality_domains: per unit, ``{modality: domain}`` for each modality it holds
            (``dataset.modality_domains``; an empty domain is a domain like any other).

    Returns:
        float64 (N,) weights summing to 1.

    Raises:
        ValueError: when a unit holds no modality.
    """
    labels = [int(label) for label in labels]
    for index, domains in enumerate(modality_domains):
        if not domains:
            raise ValueError(f"unit {index} holds no modality: nothing to balance it by")
    units_in = Counter((label, modality, domain)
                       for label, domains in zip(labels, modality_domains, strict=True)
                       for modality, domain in domains.items())
    domains_in = Counter((label, modality) for label, modality, _ in units_in)
    modalities_in = Counter(label for label, _ in domains_in)
    n_labels = len(modalities_in)
    weights = []
    for label, domains in zip(labels, modality_domains, strict=True):
        share = sum(1.0 / (domains_in[label, modality] * units_in[label, modality, domain])
                    for modality, domain in domains.items())
        weights.append(share / (n_labels * modalities_in[label]))
    return torch.tensor(weights, dtype=torch.float64)


class BalancedUnitSampler(Sampler[int]):
    """Draws unit indices with replacement, weighted by :func:`balanced_weights`.

    The order depends only on ``seed + epoch``: call :meth:`set_epoch` before each epoch
    for a fresh, reproducible order.

    Args:
        labels: label code per unit (``dataset.labels``).
        modality_domains: ``{modality: domain}`` per unit (``dataset.modality_domains``).
        num_samples: indices per epoch; defaults to the number of units.
        seed: the base seed.
    """

    def __init__(self, labels: Sequence[int] | np.ndarray,
                 modality_domains: Sequence[Mapping[str, str]], *,
                 num_samples: int | None = None, seed: int = 0) -> None:
        if len(labels) == 0:
            raise ValueError("BalancedUnitSampler needs at least one unit, got 0")
        if len(labels) != len(modality_domains):
            raise ValueError(f"labels ({len(labels)}) and modality_domains "
                             f"({len(modality_domains)}) differ in length")
        self.num_samples = len(labels) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.weights = balanced_weights(list(labels), list(modality_domains))
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


class EpochShuffle(Sampler[int]):
    """Every unit once an epoch, in an order drawn from ``(seed, epoch)`` alone.

    Unlike a shuffling DataLoader, whose order also depends on how often its generator was
    drawn from (once per iterator, which persistent workers create only once), the order
    here is the same whatever the number of workers. Call :meth:`set_epoch` before each
    epoch.
    """

    def __init__(self, num_units: int, *, seed: int = 0) -> None:
        if num_units < 1:
            raise ValueError(f"EpochShuffle needs at least one unit, got {num_units}")
        self.num_units = int(num_units)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng((self.seed, self.epoch)).permutation(self.num_units)
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_units


class EpochTagged(Sampler[tuple[int, int]]):
    """``(epoch, index)`` for each index of ``sampler``: the epoch travels with the index.

    :class:`~radpath.batch.dataset.PatientBagDataset` makes an item's draws from the epoch in
    its key, so workers need not be restarted each epoch to learn it (and lose their
    in-memory cache). :meth:`set_epoch`, which Lightning calls each epoch, also sets the
    wrapped sampler's epoch.
    """

    def __init__(self, sampler: Sampler[int]) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)
