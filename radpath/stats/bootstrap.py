"""The class-stratified, patient-level bootstrap behind every interval of radpath.

Hand-written because no library resamples *patients* within their class and weighs their
rows (scikit-learn and torchmetrics bootstrap rows, which overstates the number of cases).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

# Bootstrap work is done in blocks of about this many (resample, row) cells, to bound memory.
BLOCK_CELLS = 2_000_000

def bootstrap_weights(y: np.ndarray, groups: Any | None, n_boot: int,
                      rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Row weights of a class-stratified, patient-level bootstrap, in blocks.

    Patients (``groups``; each row its own patient when None) are drawn with replacement
    within their class, a patient's class being the maximum label of its rows; a drawn
    patient brings all its rows. Yields ``(block, n_rows)`` arrays of how many times each
    row was drawn, ``n_boot`` rows in all.
    """
    if groups is None:
        patient = np.arange(len(y))
    else:
        _, patient = np.unique(np.asarray(groups), return_inverse=True)
        patient = patient.ravel()
    patient_label = np.zeros(patient.max(initial=-1) + 1, dtype=int)
    np.maximum.at(patient_label, patient, y)
    strata = [np.flatnonzero(patient_label == c) for c in (1, 0)]
    block = max(1, BLOCK_CELLS // max(1, len(y)))
    for start in range(0, n_boot, block):
        size = min(block, n_boot - start)
        counts = np.zeros((size, len(patient_label)))
        for members in strata:
            if len(members):
                uniform = np.full(len(members), 1.0 / len(members))
                counts[:, members] = rng.multinomial(len(members), uniform, size=size)
        yield counts[:, patient]


def weighted_roc(scores: np.ndarray, y: np.ndarray,
                 weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curves of weighted cases, one per row of ``weights``.

    Returns ``(fpr, tpr)``, each ``(n_weights, n_distinct_scores + 1)``, from the highest
    threshold (nothing called positive) down; tied scores move together.
    """
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    w = weights[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1 - y[order]), starts, axis=1)
    zeros = np.zeros((len(w), 1))
    tp = np.concatenate([zeros, np.cumsum(pos, axis=1)], axis=1)
    fp = np.concatenate([zeros, np.cumsum(neg, axis=1)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return fp / fp[:, -1:], tp / tp[:, -1:]


def trapezoid_auc(fpr: np.ndarray, tpr: np.ndarray) -> np.ndarray:
    # Trapezoids over tied groups give ties half credit: the Mann-Whitney AUC.
    return (np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2.0).sum(axis=1)

