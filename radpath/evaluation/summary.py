"""The report's compact summary: AUC, calibration, the operating threshold, the spread of
the predicted probabilities, and warnings a reader must not miss.

One threshold per (task, modality) is chosen on validation (Youden's J, see
:func:`~radpath.evaluation.evaluate.thresholds_from`), or 0.5 when there is no validation
split; the table, the confusion matrix and every thresholded figure use that same number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# Below this interquartile range the model is close to constant: any AUC rests on tiny
# differences between cases, not on a separation a threshold could use.
FLAT_IQR = 0.02
# Below this many cases of a class a bootstrap CI is too coarse to trust.
FEW_CASES = 10


def spread(p: np.ndarray) -> dict[str, float]:
    """Minimum, maximum and interquartile range of predicted probabilities."""
    p = np.asarray(p, dtype=float)
    if p.size == 0:
        return {"min": float("nan"), "max": float("nan"), "iqr": float("nan")}
    q1, q3 = np.percentile(p, [25, 75])
    return {"min": float(p.min()), "max": float(p.max()), "iqr": float(q3 - q1)}


def threshold_of(rows: Sequence[dict[str, Any]], task: str, modality: str) -> tuple[float, str]:
    """The (threshold, source) the metric rows used for ``task`` and ``modality``."""
    for row in rows:
        if row["task"] == task and row["modality"] == modality and "threshold" in row:
            return float(row["threshold"]), str(row["threshold_from"])
    return 0.5, "default 0.5"


def warnings_for(modality: str, y: np.ndarray, p: np.ndarray) -> list[str]:
    """Plain-language warnings about one modality's predictions."""
    out = []
    iqr = spread(p)["iqr"]
    if iqr < FLAT_IQR:
        out.append(f"{modality}: predictions barely vary (IQR {iqr:.4f} < {FLAT_IQR}); the "
                   f"ranking rests on tiny differences, read the AUC with care.")
    positives, negatives = int((y == 1).sum()), int((y == 0).sum())
    if min(positives, negatives) < FEW_CASES:
        out.append(f"{modality}: only {positives} positive and {negatives} negative cases; "
                   f"the 95% CI rests on a handful of cases.")
    return out


def operating_points(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per (task, modality): its threshold and where it came from."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if "threshold" in row:
            seen.setdefault((row["task"], row["modality"]), {
                "task": row["task"], "modality": row["modality"],
                "threshold": row["threshold"], "source": row["threshold_from"]})
    return list(seen.values())


def summary_row(rows: Sequence[dict[str, Any]], task: str, modality: str) -> dict[str, Any]:
    """The ``domain == "all"`` metric rows of one (task, modality), keyed by metric."""
    return {r["metric"]: r for r in rows
            if r["task"] == task and r["modality"] == modality and r["domain"] == "all"}
