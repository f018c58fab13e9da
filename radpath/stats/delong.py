"""DeLong's test for two correlated ROC AUCs measured on the same cases.

DeLong, DeLong & Clarke-Pearson (1988), Biometrics 44:837-845, computed with the fast
midrank algorithm of Sun & Xu (2014), IEEE Signal Processing Letters 21:1389-1393.

With ``m`` positives ``X`` and ``n`` negatives ``Y``, the structural components of one
classifier are ``V10(X_i) = mean_j psi(X_i, Y_j)`` and ``V01(Y_j) = mean_i psi(X_i, Y_j)``,
where ``psi(x, y) = [x > y] + 0.5 [x = y]``. Their mean is the AUC and the covariance of
two AUCs is ``S10 / m + S01 / n``, ``S10`` and ``S01`` being the sample covariances of the
components. Sun & Xu obtain the components from midranks, in O((m + n) log(m + n)):
``V10(X_i) = (rank of X_i among all - rank of X_i among X) / n``, and likewise for ``Y``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm, rankdata

from radpath.stats.estimate import Cumulative, Estimate, as_binary_labels, as_scores, check_level


@dataclass(frozen=True)
class DeLongResult:
    """Two AUCs, their difference (a - b) with its interval, and the two-sided test."""

    auc_a: float
    auc_b: float
    difference: float
    z: float
    p_value: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def structural_components(y_true: np.ndarray,
                          scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong structural components of ``k`` classifiers.

    Args:
        y_true: 0/1 labels, ``(N,)``.
        scores: ``(k, N)`` scores.

    Returns:
        ``aucs (k,)``, ``v10 (k, m)`` over the positives, ``v01 (k, n)`` over the negatives.
    """
    positives, negatives = scores[:, y_true == 1], scores[:, y_true == 0]
    m, n = positives.shape[1], negatives.shape[1]
    rank_all = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    rank_pos = rankdata(positives, axis=1)
    rank_neg = rankdata(negatives, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m
    aucs = v10.mean(axis=1)
    return aucs, v10, v01


def delong_covariance(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs ``(k,)`` and their DeLong covariance ``(k, k)`` for ``(k, N)`` scores."""
    aucs, v10, v01 = structural_components(y_true, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((len(aucs),) * 2)
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((len(aucs),) * 2)
    return aucs, s10 / m + s01 / n


def _checked(y_true: Any, *score_sets: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = as_binary_labels(y_true)
    names = ["scores_a", "scores_b"] if len(score_sets) == 2 else ["scores"]
    scores = np.stack([as_scores(s, len(y_true), name)
                       for s, name in zip(score_sets, names, strict=True)])
    counts = np.bincount(y_true, minlength=2)
    if counts.min() == 0:
        raise ValueError(f"DeLong needs both classes; got {counts[1]} positives and "
                         f"{counts[0]} negatives")
    return y_true, scores


def delong_test(y_true: Any, scores_a: Any, scores_b: Any, *,
                level: float = 0.95) -> DeLongResult:
    """Compare two correlated AUCs on the same cases (two-sided DeLong test).

    When the variance of the difference is zero (e.g. identical scores) and the AUCs are
    equal, ``z = 0`` and ``p = 1``; if they differ with zero variance, ``z = ±inf`` and
    ``p = 0``. The interval of the difference is the normal one, clipped to [-1, 1].
    """
    check_level(level)
    y_true, scores = _checked(y_true, scores_a, scores_b)
    aucs, covariance = delong_covariance(y_true, scores)
    difference = float(aucs[0] - aucs[1])
    variance = max(0.0, float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]))
    # Rounding leaves a tiny non-zero difference or variance for equivalent classifiers.
    if abs(difference) < 1e-12:
        difference = 0.0
    if variance < 1e-15:
        variance = 0.0
    if variance == 0.0:
        z = 0.0 if difference == 0.0 else float(np.copysign(np.inf, difference))
    else:
        z = difference / np.sqrt(variance)
    p_value = float(2.0 * norm.sf(abs(z)))
    half = float(norm.ppf(0.5 + level / 2.0)) * np.sqrt(variance)
    return DeLongResult(float(aucs[0]), float(aucs[1]), difference, float(z), p_value,
                        float(max(-1.0, difference - half)), float(min(1.0, difference + half)))


def delong_ci(y_true: Any, scores: Any, *, level: float = 0.95) -> Estimate:
    """One AUC with its DeLong-variance normal interval, clipped to [0, 1]."""
    check_level(level)
    y_true, stacked = _checked(y_true, scores)
    aucs, covariance = delong_covariance(y_true, stacked)
    half = float(norm.ppf(0.5 + level / 2.0)) * np.sqrt(max(0.0, float(covariance[0, 0])))
    value = float(aucs[0])
    return Estimate(value, float(max(0.0, value - half)), float(min(1.0, value + half)),
                    len(y_true))


class DeLongComparison(Cumulative):
    """Accumulating DeLong comparison of two classifiers scored on the same cases."""

    def __init__(self, *, level: float = 0.95) -> None:
        check_level(level)
        self.level = level
        super().__init__()

    def update(self, y_true: Any, scores_a: Any, scores_b: Any) -> None:
        y_true = as_binary_labels(y_true)
        self._append(y_true, as_scores(scores_a, len(y_true), "scores_a"),
                     as_scores(scores_b, len(y_true), "scores_b"))

    def compute(self) -> DeLongResult:
        return delong_test(*self._gathered(), level=self.level)
