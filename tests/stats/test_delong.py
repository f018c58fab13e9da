"""DeLong's test for correlated AUCs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radpath.stats.delong import (
    DeLongComparison,
    delong_ci,
    delong_covariance,
    delong_test,
    structural_components,
)


def _simulated(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y * 1.5 + rng.normal(0, 1, n), y * 0.2 + rng.normal(0, 1, n)


def test_aucs_match_sklearn():
    y, a, b = _simulated()
    result = delong_test(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a))
    assert result.auc_b == pytest.approx(roc_auc_score(y, b))
    assert result.difference == pytest.approx(result.auc_a - result.auc_b)


def test_clearly_better_classifier_is_significant():
    y, a, b = _simulated()
    result = delong_test(y, a, b)
    assert result.p_value < 0.01 and result.z > 0
    assert 0 < result.ci_low < result.difference < result.ci_high


def test_identical_scores_give_p_one_without_division_by_zero():
    y, a, _ = _simulated()
    with np.errstate(all="raise"):
        result = delong_test(y, a, a.copy())
    assert (result.difference, result.z, result.p_value) == (0.0, 0.0, 1.0)
    assert result.ci_low == result.ci_high == 0.0


def test_zero_variance_with_different_aucs():
    y = np.array([0, 0, 1, 1])
    result = delong_test(y, [0.1, 0.2, 0.8, 0.9], [0.5, 0.5, 0.5, 0.5])
    assert result.difference == 0.5 and result.p_value == 0.0 and np.isinf(result.z)


def test_variance_of_hand_worked_example():
    # Positives X = 0.9, 0.6, 0.4; negatives Y = 0.5, 0.3, 0.1.
    # V10(X) = fraction of negatives below each positive = 1, 1, 2/3.
    # V01(Y) = fraction of positives above each negative = 2/3, 1, 1.
    # AUC = 8/9; both components have sample variance 1/27, so
    # Var(AUC) = (1/27) / 3 + (1/27) / 3 = 2/81.
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([[0.9, 0.6, 0.4, 0.5, 0.3, 0.1]])
    aucs, v10, v01 = structural_components(y, s)
    np.testing.assert_allclose(v10[0], [1, 1, 2 / 3])
    np.testing.assert_allclose(v01[0], [2 / 3, 1, 1])
    aucs, covariance = delong_covariance(y, s)
    assert aucs[0] == pytest.approx(8 / 9)
    assert covariance[0, 0] == pytest.approx(2 / 81)


def test_covariance_matches_brute_force_with_ties():
    rng = np.random.default_rng(3)
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
    s = np.round(rng.normal(size=(2, 9)), 0)  # heavy ties
    psi = lambda x, z: (x > z) + 0.5 * (x == z)  # noqa: E731
    pos, neg = s[:, y == 1], s[:, y == 0]
    v10 = np.array([[psi(p, neg[k]).mean() for p in pos[k]] for k in range(2)])
    v01 = np.array([[psi(pos[k], q).mean() for q in neg[k]] for k in range(2)])
    expected = np.cov(v10) / 4 + np.cov(v01) / 5
    _, covariance = delong_covariance(y, s)
    np.testing.assert_allclose(covariance, expected)
    result = delong_test(y, s[0], s[1])
    variance = expected[0, 0] + expected[1, 1] - 2 * expected[0, 1]
    assert result.z == pytest.approx(result.difference / np.sqrt(variance))


def test_delong_ci_brackets_auc_and_matches_variance():
    y, a, _ = _simulated()
    estimate = delong_ci(y, a)
    _, covariance = delong_covariance(y, a[None, :])
    assert estimate.value == pytest.approx(roc_auc_score(y, a))
    assert estimate.ci_high - estimate.value == pytest.approx(
        1.959964 * np.sqrt(covariance[0, 0]), rel=1e-5)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="both classes"):
        delong_test([1, 1], [0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="scores_b has 2 values but the labels have 3"):
        delong_test([0, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.4])
    with pytest.raises(ValueError, match="non-finite"):
        delong_ci([0, 1], [np.nan, 0.2])


def test_comparison_class_accumulates():
    y, a, b = _simulated()
    metric = DeLongComparison()
    metric.update(y[:120], a[:120], b[:120])
    metric.update(y[120:], a[120:], b[120:])
    assert metric.compute() == delong_test(y, a, b)
