"""AUC with a patient-level stratified bootstrap 95% confidence interval.

Resampling is over patients (or units), stratified by class, so the interval reflects the
number of independent cases rather than the number of images, and every resample holds
both classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class Estimate:
    """A metric value with its 95% confidence interval and the number of cases."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


NAN_ESTIMATE = Estimate(float("nan"), float("nan"), float("nan"), 0)


def auc_with_ci(y_true: np.ndarray, scores: np.ndarray, *, n_boot: int = 1000,
                seed: int = 0, level: float = 0.95) -> Estimate:
    """ROC AUC with a class-stratified bootstrap percentile interval.

    Args:
        y_true: 0/1 labels, one per case (patient).
        scores: higher means more likely positive.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        level: confidence level.

    Returns:
        The estimate, or NaNs with ``n`` set when only one class is present.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape:
        raise ValueError(f"y_true {y_true.shape} and scores {scores.shape} differ in shape")
    positives, negatives = np.flatnonzero(y_true == 1), np.flatnonzero(y_true == 0)
    if len(positives) == 0 or len(negatives) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), len(y_true))
    value = float(roc_auc_score(y_true, scores))
    # AUC is the mean over (positive, negative) pairs of [s_p > s_n] + 0.5 [s_p = s_n]; a
    # resample only reweights those pairs, so each bootstrap AUC is one matrix product.
    pos, neg = scores[positives], scores[negatives]
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    pos_counts = rng.multinomial(len(pos), np.full(len(pos), 1.0 / len(pos)), size=n_boot)
    neg_counts = rng.multinomial(len(neg), np.full(len(neg), 1.0 / len(neg)), size=n_boot)
    draws = np.einsum("bp,pn,bn->b", pos_counts, wins, neg_counts) / (len(pos) * len(neg))
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Estimate(value, float(low), float(high), len(y_true))
