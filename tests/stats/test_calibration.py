"""Expected calibration error and reliability curves."""

from __future__ import annotations

import numpy as np
import pytest

from radpath.stats.calibration import (
    CalibrationError,
    expected_calibration_error,
    reliability_curve,
)


def test_perfectly_calibrated_probabilities_have_small_ece():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=20000) < p).astype(int)
    for strategy in ("uniform", "quantile"):
        estimate = expected_calibration_error(y, p, strategy=strategy, n_boot=200)
        assert estimate.value < 0.03
        assert estimate.ci_low <= estimate.value <= estimate.ci_high < 0.05


def test_overconfident_predictions_have_large_ece():
    rng = np.random.default_rng(1)
    truth = rng.uniform(size=5000)
    y = (rng.uniform(size=5000) < truth).astype(int)
    overconfident = np.where(truth > 0.5, 0.99, 0.01)
    assert expected_calibration_error(y, overconfident, n_boot=200).value > 0.2


def test_hand_worked_four_samples():
    # Two bins of width 0.5. Bin [0, 0.5): p = 0.2, 0.4 with y = 0, 1 -> observed 0.5,
    # predicted 0.3, gap 0.2. Bin [0.5, 1]: p = 0.6, 1.0 with y = 1, 1 -> observed 1.0,
    # predicted 0.8, gap 0.2. ECE = 2/4 * 0.2 + 2/4 * 0.2 = 0.2.
    y, p = [0, 1, 1, 1], [0.2, 0.4, 0.6, 1.0]
    assert expected_calibration_error(y, p, n_bins=2, n_boot=50).value == pytest.approx(0.2)
    centres, observed, predicted, counts = reliability_curve(y, p, n_bins=2)
    np.testing.assert_allclose(centres, [0.25, 0.75])
    np.testing.assert_allclose(observed, [0.5, 1.0])
    np.testing.assert_allclose(predicted, [0.3, 0.8])
    np.testing.assert_array_equal(counts, [2, 2])


def test_empty_bins_are_nan_and_quantile_bins_are_balanced():
    centres, observed, _, counts = reliability_curve([0, 1], [0.05, 0.15], n_bins=10)
    assert len(centres) == 10 and counts.sum() == 2 and np.isnan(observed[5])
    rng = np.random.default_rng(2)
    p = rng.beta(0.5, 3, size=1000)
    *_, counts = reliability_curve(rng.integers(0, 2, 1000), p, 5, strategy="quantile")
    assert counts.min() >= 190


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]; found \[1.5\]"):
        expected_calibration_error([0, 1], [0.2, 1.5])
    with pytest.raises(ValueError, match="'equal'"):
        reliability_curve([0, 1], [0.2, 0.5], strategy="equal")
    with pytest.raises(ValueError, match="n_bins must be >= 1, got 0"):
        CalibrationError(0)


def test_class_accumulates():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=300)
    y = (rng.uniform(size=300) < p).astype(int)
    metric = CalibrationError(n_boot=100)
    metric.update(y[:100], p[:100])
    metric.update(y[100:], p[100:])
    assert metric.compute() == expected_calibration_error(y, p, n_boot=100)


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_curve_equals_scikit_learns_where_no_probability_is_on_an_edge(strategy):
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(5)
    p = rng.random(300)
    y = (rng.random(300) < p).astype(int)
    _, observed, predicted, counts = reliability_curve(y, p, 8, strategy=strategy)
    expected_true, expected_pred = calibration_curve(y, p, n_bins=8, strategy=strategy)
    kept = counts > 0
    np.testing.assert_allclose(observed[kept], expected_true, rtol=1e-12)
    np.testing.assert_allclose(predicted[kept], expected_pred, rtol=1e-12)


def test_a_probability_on_an_edge_goes_to_the_upper_bin():
    # radpath's bins are [a, b): 0.5 lies in the upper of two bins (scikit-learn: the lower).
    _, observed, predicted, counts = reliability_curve([0, 1], [0.5, 0.75], 2)
    assert observed[1] == 0.5
    assert counts.tolist() == [0, 2] and predicted[1] == 0.625
