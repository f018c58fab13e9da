"""Balanced sampling over (label, domain) groups."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from radpath.engine.sampler import BalancedUnitSampler, balanced_weights

# Deliberately unbalanced: 6 + 2 + 1 + 1 units in four groups (one with unknown label).
LABELS = np.array([0, 0, 0, 0, 0, 0, 2, 2, 2, -1])
DOMAINS = ["a|"] * 6 + ["a|"] * 2 + ["b|b", "a|"]


def test_groups_are_drawn_equally_often() -> None:
    sampler = BalancedUnitSampler(LABELS, DOMAINS, num_samples=8000, seed=1)
    groups = Counter((int(LABELS[i]), DOMAINS[i]) for i in sampler)
    assert len(groups) == 4
    expected = 8000 / 4
    chi2 = sum((n - expected) ** 2 / expected for n in groups.values())
    assert chi2 < 16.3  # 3 degrees of freedom, p = 0.001


def test_uniform_inside_a_group() -> None:
    draws = Counter(BalancedUnitSampler(LABELS, DOMAINS, num_samples=6000, seed=0))
    inside = [draws[i] for i in range(6)]
    assert max(inside) / min(inside) < 1.5


def test_weights_sum_to_one() -> None:
    weights = balanced_weights(LABELS.tolist(), DOMAINS)
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[9].item() == pytest.approx(0.25)


def test_same_seed_and_epoch_repeat_and_epochs_differ() -> None:
    a = BalancedUnitSampler(LABELS, DOMAINS, seed=7)
    b = BalancedUnitSampler(LABELS, DOMAINS, seed=7)
    assert list(a) == list(b) == list(a)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)


def test_length() -> None:
    assert len(BalancedUnitSampler(LABELS, DOMAINS)) == len(LABELS)
    sampler = BalancedUnitSampler(LABELS, DOMAINS, num_samples=25)
    assert len(sampler) == len(list(sampler)) == 25


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        BalancedUnitSampler([0, 1], ["a"])
    with pytest.raises(ValueError, match="num_samples"):
        BalancedUnitSampler([0], ["a"], num_samples=0)
    with pytest.raises(ValueError, match="at least one"):
        BalancedUnitSampler([], [])
