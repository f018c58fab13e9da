"""Classification metrics, each with its 95% confidence interval.

Every metric is a plain function and a small stateful class (``update`` / ``compute`` /
``reset``), as in MONAI.

Resampling is over patients (or units), stratified by class, so an interval reflects the
number of independent cases rather than the number of images, and every resample holds
both classes. Proportions (sensitivity, specificity) use the Wilson score interval.

Operating points: a threshold is chosen once, on the validation split, with
:func:`choose_threshold`, then frozen and applied unchanged to the test split(s)
(:func:`sensitivity_specificity_at`, :func:`balanced_accuracy_with_ci`). Choosing it on the
test split would report an optimistic operating point.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from radpath.stats.bootstrap import BLOCK_CELLS, bootstrap_weights, trapezoid_auc, weighted_roc
from radpath.stats.estimate import (
    NAN_ESTIMATE,
    Cumulative,
    Estimate,
    as_binary_labels,
    as_scores,
    check_level,
    percentile_interval,
    wilson_interval,
)

# --------------------------------------------------------------------------- AUC


def auc_with_ci(y_true: np.ndarray, scores: np.ndarray, *, groups: Any | None = None,
                n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Estimate:
    """ROC AUC with a class-stratified bootstrap percentile interval.

    Args:
        y_true: 0/1 labels, one per row.
        scores: higher means more likely positive.
        groups: patient id of each row. When given, the bootstrap draws patients
            (stratified by the patient's label, the maximum over its rows) and takes all
            their rows, and ``n`` counts patients; otherwise each row is a case.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        level: confidence level.

    Returns:
        The estimate, or NaNs with ``n`` set when only one class is present.
    """
    check_level(level)
    y_true = as_binary_labels(y_true)
    scores = as_scores(scores, len(y_true))
    n_cases = len(y_true)
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != y_true.shape:
            raise ValueError(f"groups has shape {groups.shape} but y_true {y_true.shape}")
        n_cases = len(np.unique(groups))
    positives, negatives = np.flatnonzero(y_true == 1), np.flatnonzero(y_true == 0)
    if len(positives) == 0 or len(negatives) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), n_cases)
    value = float(roc_auc_score(y_true, scores))
    rng = np.random.default_rng(seed)
    if groups is None:
        # AUC is the mean over (positive, negative) pairs of [s_p > s_n] + 0.5 [s_p = s_n];
        # a resample only reweights those pairs, so each bootstrap AUC is one matrix product.
        pos, neg = scores[positives], scores[negatives]
        wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        pos_counts = rng.multinomial(len(pos), np.full(len(pos), 1.0 / len(pos)), size=n_boot)
        neg_counts = rng.multinomial(len(neg), np.full(len(neg), 1.0 / len(neg)), size=n_boot)
        draws = np.einsum("bp,pn,bn->b", pos_counts, wins, neg_counts) / (len(pos) * len(neg))
    else:
        # Patients bring unequal numbers of rows, so weight rows and integrate the weighted
        # ROC: O(n_boot x rows) after one sort, no pair matrix.
        draws = np.concatenate([trapezoid_auc(*weighted_roc(scores, y_true, w))
                                for w in bootstrap_weights(y_true, groups, n_boot, rng)])
    low, high = percentile_interval(draws, level)
    return Estimate(value, low, high, n_cases)


class AUC(Cumulative):
    """Accumulating ROC AUC with its bootstrap interval (see :func:`auc_with_ci`)."""

    def __init__(self, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        check_level(level)
        self.n_boot, self.seed, self.level = n_boot, seed, level
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._grouped: bool | None = None

    def update(self, y_true: Any, scores: Any, groups: Any | None = None) -> None:
        y_true = as_binary_labels(y_true)
        scores = as_scores(scores, len(y_true))
        if self._grouped is not None and self._grouped != (groups is not None):
            raise ValueError("give groups on every update() or on none "
                             f"(earlier updates had groups={self._grouped})")
        self._grouped = groups is not None
        if groups is None:
            self._append(y_true, scores)
        else:
            self._append(y_true, scores, groups)

    def compute(self) -> Estimate:
        arrays = self._gathered()
        groups = arrays[2] if self._grouped else None
        return auc_with_ci(arrays[0], arrays[1], groups=groups, n_boot=self.n_boot,
                           seed=self.seed, level=self.level)


# --------------------------------------------------------------------------- operating points


def choose_threshold(y_true: Any, scores: Any, *, rule: str = "youden",
                     target: float = 0.9) -> float:
    """Choose a decision threshold on the validation split (predict positive if s >= t).

    Freeze the result and apply it unchanged to the test split(s).

    Args:
        y_true: 0/1 validation labels.
        scores: validation scores.
        rule: ``"youden"`` maximises sensitivity + specificity - 1 (the highest such
            threshold on ties); ``"sensitivity"`` is the highest threshold whose
            sensitivity reaches ``target``, so the best specificity at that sensitivity.
        target: sensitivity wanted by ``rule="sensitivity"``.
    """
    y_true = as_binary_labels(y_true)
    scores = as_scores(scores, len(y_true))
    if rule not in ("youden", "sensitivity"):
        raise ValueError(f"rule must be 'youden' or 'sensitivity', got {rule!r}")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target}")
    if y_true.min(initial=1) == y_true.max(initial=0):
        raise ValueError(f"choosing a threshold needs both classes; labels are "
                         f"{np.unique(y_true).tolist()}")
    fpr, tpr, thresholds = roc_curve(y_true, scores, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # the first threshold is +inf: nothing positive
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    reached = tpr - fpr if rule == "youden" else tpr >= target - 1e-12
    index = int(np.argmax(reached))  # the first, i.e. highest, threshold
    return float(thresholds[index])


def _predictions(s_or_pred: Any, n: int, threshold: float) -> np.ndarray:
    return as_scores(s_or_pred, n, "scores or predictions") >= threshold


def sensitivity_specificity_at(y_true: Any, scores: Any, threshold: float, *,
                               level: float = 0.95) -> tuple[Estimate, Estimate]:
    """Sensitivity and specificity at a frozen threshold, with Wilson intervals.

    A case is called positive when its score is ``>= threshold``. Each estimate's ``n`` is
    its denominator (positives for sensitivity, negatives for specificity).
    """
    y_true = as_binary_labels(y_true)
    called = _predictions(scores, len(y_true), threshold)
    positive = y_true == 1
    sensitivity = wilson_interval(int((called & positive).sum()), int(positive.sum()), level)
    specificity = wilson_interval(int((~called & ~positive).sum()), int((~positive).sum()),
                                  level)
    return sensitivity, specificity


def balanced_accuracy_with_ci(y_true: Any, s_or_pred: Any, threshold: float = 0.5, *,
                              n_boot: int = 1000, seed: int = 0,
                              level: float = 0.95) -> Estimate:
    """Balanced accuracy (mean of sensitivity and specificity) with a bootstrap interval.

    Args:
        y_true: 0/1 labels.
        s_or_pred: scores, or 0/1 predictions (the default threshold 0.5 suits those).
        threshold: frozen threshold; positive when ``>= threshold``.
        n_boot: class-stratified bootstrap resamples.
        seed: seed of the resampling.
        level: confidence level.

    Returns:
        The estimate, or NaNs with ``n`` set when only one class is present.
    """
    check_level(level)
    y_true = as_binary_labels(y_true)
    called = _predictions(s_or_pred, len(y_true), threshold)
    n_pos, n_neg = int(y_true.sum()), int(len(y_true) - y_true.sum())
    if n_pos == 0 or n_neg == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), len(y_true))
    sensitivity = (called & (y_true == 1)).sum() / n_pos
    specificity = (~called & (y_true == 0)).sum() / n_neg
    # Resampling a class with replacement draws its correct count from a binomial.
    rng = np.random.default_rng(seed)
    draws = (rng.binomial(n_pos, sensitivity, n_boot) / n_pos
             + rng.binomial(n_neg, specificity, n_boot) / n_neg) / 2.0
    low, high = percentile_interval(draws, level)
    return Estimate(float((sensitivity + specificity) / 2.0), low, high, len(y_true))


class BalancedAccuracy(Cumulative):
    """Accumulating balanced accuracy at a frozen threshold."""

    def __init__(self, threshold: float = 0.5, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> None:
        check_level(level)
        self.threshold, self.n_boot, self.seed, self.level = threshold, n_boot, seed, level
        super().__init__()

    def update(self, y_true: Any, s_or_pred: Any) -> None:
        y_true = as_binary_labels(y_true)
        self._append(y_true, as_scores(s_or_pred, len(y_true), "scores or predictions"))

    def compute(self) -> Estimate:
        y_true, scores = self._gathered()
        return balanced_accuracy_with_ci(y_true, scores, self.threshold, n_boot=self.n_boot,
                                         seed=self.seed, level=self.level)


# --------------------------------------------------------------------------- multi-class


def _integer_labels(values: Any, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if values.dtype == bool:
        return values.astype(int)
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}")
    bad = np.unique(values[~np.isfinite(values) | (values != np.round(values))])
    if bad.size:
        raise ValueError(f"{name} must hold integer class indices; found {bad[:5].tolist()}")
    return values.astype(np.int64)


def _kappa_from_counts(counts: np.ndarray, k: int) -> np.ndarray:
    """Quadratic-weighted kappa of flattened ``(..., k*k)`` confusion counts."""
    observed = counts.reshape(-1, k, k).astype(np.float64)
    total = observed.sum(axis=(1, 2))
    expected = observed.sum(2)[:, :, None] * observed.sum(1)[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = expected / total[:, None, None]
        index = np.arange(k)
        weights = (index[:, None] - index[None, :]) ** 2
        return 1.0 - (weights * observed).sum((1, 2)) / (weights * expected).sum((1, 2))


def quadratic_weighted_kappa(y_true: Any, y_pred: Any, num_classes: int | None = None, *,
                             n_boot: int = 1000, seed: int = 0,
                             level: float = 0.95) -> Estimate:
    """Cohen's kappa with quadratic weights, with a case-bootstrap percentile interval.

    The value equals ``sklearn.metrics.cohen_kappa_score(weights="quadratic")``: with
    ``num_classes=None`` the classes are the sorted labels seen (as scikit-learn does, so
    an unseen class in between shrinks the distances); with ``num_classes`` they are
    ``0 .. num_classes - 1``. NaN when kappa is undefined (a single class).
    """
    check_level(level)
    t = _integer_labels(y_true, "y_true")
    p = _integer_labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        return NAN_ESTIMATE
    if num_classes is None:
        classes = np.unique(np.concatenate([t, p]))
    else:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        seen = np.unique(np.concatenate([t, p]))
        outside = seen[(seen < 0) | (seen >= num_classes)]
        if outside.size:
            raise ValueError(f"labels {outside[:5].tolist()} lie outside 0..{num_classes - 1}")
        classes = np.arange(num_classes)
    k = len(classes)
    codes = np.searchsorted(classes, t) * k + np.searchsorted(classes, p)
    # Hand-written, not scikit-learn's cohen_kappa_score: that agrees only to ~1e-16 (another
    # order of the same sums), and it would take one call per bootstrap resample.
    value = float(_kappa_from_counts(np.bincount(codes, minlength=k * k), k)[0])
    rng = np.random.default_rng(seed)
    n = len(codes)
    block = max(1, BLOCK_CELLS // n)
    draws = []
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        picked = codes[rng.integers(0, n, size=(size, n))]
        keys = (picked + (np.arange(size) * k * k)[:, None]).ravel()
        draws.append(_kappa_from_counts(np.bincount(keys, minlength=size * k * k), k))
    low, high = percentile_interval(np.concatenate(draws), level)
    return Estimate(value, low, high, n)


class QuadraticKappa(Cumulative):
    """Accumulating quadratic-weighted kappa (see :func:`quadratic_weighted_kappa`)."""

    def __init__(self, num_classes: int | None = None, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> None:
        check_level(level)
        self.num_classes, self.n_boot, self.seed, self.level = num_classes, n_boot, seed, level
        super().__init__()

    def update(self, y_true: Any, y_pred: Any) -> None:
        self._append(_integer_labels(y_true, "y_true"), _integer_labels(y_pred, "y_pred"))

    def compute(self) -> Estimate:
        y_true, y_pred = self._gathered()
        return quadratic_weighted_kappa(y_true, y_pred, self.num_classes, n_boot=self.n_boot,
                                        seed=self.seed, level=self.level)


def confusion(y_true: Any, y_pred: Any, labels: Sequence[Any]) -> np.ndarray:
    """Confusion counts: row = true label, column = predicted label, in ``labels`` order."""
    y_true, y_pred, labels = np.asarray(y_true), np.asarray(y_pred), list(labels)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D, got {y_true.shape}, {y_pred.shape}")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred has {len(y_pred)}")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be non-empty and distinct, got {labels}")
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(v) for v in np.concatenate([y_true, y_pred]).tolist()
                      if v not in index})
    if unknown:
        raise ValueError(f"values {unknown[:5]} are not among labels {labels}")
    # Codes, not the values: scikit-learn sorts mixed-type labels, which may fail.
    codes = list(range(len(labels)))
    return confusion_matrix([index[v] for v in y_true.tolist()],
                            [index[v] for v in y_pred.tolist()], labels=codes).astype(np.int64)


class ConfusionMatrix(Cumulative):
    """Accumulating confusion counts (see :func:`confusion`)."""

    def __init__(self, labels: Sequence[Any]) -> None:
        self.labels = list(labels)
        super().__init__()

    def update(self, y_true: Any, y_pred: Any) -> None:
        self._append(y_true, y_pred)

    def compute(self) -> np.ndarray:
        if not self._parts:
            return np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)
        y_true, y_pred = self._gathered()
        return confusion(y_true, y_pred, self.labels)
