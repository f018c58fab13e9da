"""Balanced sampling: labels equally often, and within a label each modality's domains."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from radpath.batch.sampler import (
    BalancedUnitSampler,
    EpochShuffle,
    EpochTagged,
    balanced_weights,
)

# Deliberately unbalanced, one modality: label 0 has 6 units in domain a and 2 in b, label
# 2 one unit in b, and one unit has an unknown label (-1).
LABELS = np.array([0, 0, 0, 0, 0, 0, 0, 0, 2, -1])
DOMAINS = [{"mammo": "a"}] * 6 + [{"mammo": "b"}] * 2 + [{"mammo": "b"}, {"mammo": "a"}]


def _chi2(counts: Counter, expected: float) -> float:
    return sum((n - expected) ** 2 / expected for n in counts.values())


def test_labels_then_domains_are_drawn_equally_often() -> None:
    draws = list(BalancedUnitSampler(LABELS, DOMAINS, num_samples=9000, seed=1))
    by_label = Counter(int(LABELS[i]) for i in draws)
    assert len(by_label) == 3 and _chi2(by_label, 3000) < 13.8  # 2 dof, p = 0.001
    by_domain = Counter(DOMAINS[i]["mammo"] for i in draws if LABELS[i] == 0)
    assert _chi2(by_domain, by_label[0] / 2) < 10.8  # 1 dof, p = 0.001


def test_uniform_inside_a_group() -> None:
    draws = Counter(BalancedUnitSampler(LABELS, DOMAINS, num_samples=6000, seed=0))
    inside = [draws[i] for i in range(6)]
    assert max(inside) / min(inside) < 1.5


def test_weights_with_a_pair_known_answer() -> None:
    # Label 0: two domains, a (2 units) and b (1). Label 2: a pair (mammo a, histo x) and
    # a mammogram in b; its mammo half goes 1/2 to a, 1/2 to b, its histo half to the pair.
    weights = balanced_weights([0, 0, 0, 2, 2], [
        {"mammo": "a"}, {"mammo": "a"}, {"mammo": "b"},
        {"mammo": "a", "histo": "x"}, {"mammo": "b"}])
    assert weights.tolist() == pytest.approx([0.125, 0.125, 0.25, 0.375, 0.125])


def test_pseudo_pairs_leave_the_labels_balanced() -> None:
    # As in the real data: normal patients have mammograms only; every benign and
    # malignant H&E unit is pseudo-paired with a mammogram of the same label, whose two
    # domains are unrelated. Grouping by the pair of domains gave normals a tenth.
    labels, domains = [], []
    for density in ("fatty", "glandular", "dense"):
        labels += [0] * 4
        domains += [{"mammo": density}] * 4
        for label, batch in ((1, "d1"), (2, "d2"), (1, "d3"), (2, "d4")):
            labels += [label, label]
            domains += [{"mammo": density, "histo": batch}, {"mammo": density}]
    weights = balanced_weights(labels, domains).numpy()
    share = {label: weights[np.array(labels) == label].sum() for label in (0, 1, 2)}
    assert share == pytest.approx({0: 1 / 3, 1: 1 / 3, 2: 1 / 3})
    assert weights.sum() == pytest.approx(1.0)


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
        BalancedUnitSampler([0, 1], [{"mammo": "a"}])
    with pytest.raises(ValueError, match="num_samples"):
        BalancedUnitSampler([0], [{"mammo": "a"}], num_samples=0)
    with pytest.raises(ValueError, match="at least one"):
        BalancedUnitSampler([], [])
    with pytest.raises(ValueError, match="unit 1 holds no modality"):
        balanced_weights([0, 0], [{"mammo": "a"}, {}])


def test_epoch_shuffle_is_a_permutation_drawn_from_seed_and_epoch() -> None:
    a, b = EpochShuffle(50, seed=3), EpochShuffle(50, seed=3)
    assert sorted(a) == list(range(50)) and len(a) == 50
    assert list(a) == list(b) == list(a)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(50))
    assert list(EpochShuffle(50, seed=4)) != first
    with pytest.raises(ValueError, match="at least one unit"):
        EpochShuffle(0)


def test_epoch_tagged_pairs_each_index_with_the_epoch_and_sets_the_inner_epoch() -> None:
    inner = BalancedUnitSampler(LABELS, DOMAINS, seed=7)
    tagged = EpochTagged(inner)
    assert list(tagged) == [(0, i) for i in inner] and len(tagged) == len(inner)
    tagged.set_epoch(3)
    assert inner.epoch == 3
    assert list(tagged) == [(3, i) for i in inner]
    assert list(EpochTagged(range(4))) == [(0, 0), (0, 1), (0, 2), (0, 3)]  # no set_epoch
