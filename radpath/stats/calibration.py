"""Calibration of predicted probabilities: expected calibration error and reliability curve.

Binning: ``"uniform"`` bins split [0, 1] into equal widths, each bin ``[a, b)`` except the
last, ``[a, 1]``; ``"quantile"`` bins hold about equally many cases (edges are quantiles of
the predictions; repeated edges merge, so there may be fewer bins).

``ECE = sum_b (n_b / N) |observed_b - predicted_b|`` over the bins, the gap between the
frequency of positives and the mean predicted probability in each bin. Its interval is a
case bootstrap with the bin edges held fixed at those of the full sample.

Hand-written rather than scikit-learn's ``calibration_curve`` or torchmetrics'
``BinaryCalibrationError``: scikit-learn puts a probability lying on an inner edge (a
constant model's 0.5) into the lower bin and drops empty bins, torchmetrics bins and sums
in float32; neither gives these numbers. The tests check that the curve equals
``calibration_curve`` wherever no probability lies on an edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from radpath.stats.bootstrap import BLOCK_CELLS
from radpath.stats.estimate import (
    Cumulative,
    Estimate,
    as_binary_labels,
    as_scores,
    check_level,
    percentile_interval,
)

STRATEGIES = ("uniform", "quantile")


def _checked(y_true: Any, probabilities: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = as_binary_labels(y_true)
    probabilities = as_scores(probabilities, len(y_true), "probabilities")
    outside = probabilities[(probabilities < 0.0) | (probabilities > 1.0)]
    if outside.size:
        raise ValueError(f"probabilities must lie in [0, 1]; found {outside[:5].tolist()}")
    return y_true, probabilities


def bin_edges(probabilities: np.ndarray, n_bins: int = 10,
              strategy: str = "uniform") -> np.ndarray:
    """Edges of the calibration bins, from 0 to 1."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "uniform" or len(probabilities) == 0:
        return np.linspace(0.0, 1.0, n_bins + 1)
    inner = np.quantile(probabilities, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    return np.unique(np.concatenate([[0.0], inner, [1.0]]))


def _bin_index(probabilities: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges[1:-1], probabilities, side="right")


def reliability_curve(y_true: Any, probabilities: Any, n_bins: int = 10, *,
                      strategy: str = "uniform"
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reliability diagram data, one entry per bin (empty bins give NaN frequencies).

    Returns:
        ``bin_centres`` (middle of each bin's edges), ``observed_frequency`` (fraction of
        positives), ``mean_predicted`` (mean probability) and ``counts`` (cases per bin).
    """
    y_true, probabilities = _checked(y_true, probabilities)
    edges = bin_edges(probabilities, n_bins, strategy)
    index = _bin_index(probabilities, edges)
    n_bins = len(edges) - 1
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.bincount(index, weights=y_true, minlength=n_bins) / counts
        predicted = np.bincount(index, weights=probabilities, minlength=n_bins) / counts
    return (edges[:-1] + edges[1:]) / 2.0, observed, predicted, counts


def expected_calibration_error(y_true: Any, probabilities: Any, n_bins: int = 10, *,
                               strategy: str = "uniform", n_boot: int = 1000, seed: int = 0,
                               level: float = 0.95) -> Estimate:
    """Expected calibration error with a case-bootstrap percentile interval.

    Args:
        y_true: 0/1 labels.
        probabilities: predicted probability of the positive class, in [0, 1].
        n_bins: number of bins.
        strategy: ``"uniform"`` or ``"quantile"`` bins.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        level: confidence level.
    """
    check_level(level)
    y_true, probabilities = _checked(y_true, probabilities)
    n = len(y_true)
    edges = bin_edges(probabilities, n_bins, strategy)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    n_bins = len(edges) - 1
    index = _bin_index(probabilities, edges)
    # (n_b / N) |mean y - mean p| = |sum (y - p)| / N within a bin.
    gap = y_true - probabilities
    value = float(np.abs(np.bincount(index, weights=gap, minlength=n_bins)).sum() / n)
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_CELLS // n)
    draws = []
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        picked = rng.integers(0, n, size=(size, n))
        keys = (index[picked] + (np.arange(size) * n_bins)[:, None]).ravel()
        sums = np.bincount(keys, weights=gap[picked].ravel(), minlength=size * n_bins)
        draws.append(np.abs(sums.reshape(size, n_bins)).sum(axis=1) / n)
    low, high = percentile_interval(np.concatenate(draws), level)
    return Estimate(value, low, high, n)


class CalibrationError(Cumulative):
    """Accumulating expected calibration error (see :func:`expected_calibration_error`)."""

    def __init__(self, n_bins: int = 10, *, strategy: str = "uniform", n_boot: int = 1000,
                 seed: int = 0, level: float = 0.95) -> None:
        bin_edges(np.empty(0), n_bins, strategy)  # validates the arguments now
        check_level(level)
        self.n_bins, self.strategy = n_bins, strategy
        self.n_boot, self.seed, self.level = n_boot, seed, level
        super().__init__()

    def update(self, y_true: Any, probabilities: Any) -> None:
        self._append(*_checked(y_true, probabilities))

    def compute(self) -> Estimate:
        y_true, probabilities = self._gathered()
        return expected_calibration_error(y_true, probabilities, self.n_bins,
                                          strategy=self.strategy, n_boot=self.n_boot,
                                          seed=self.seed, level=self.level)
