"""Turn unit predictions into the tidy metric rows of ``metrics.json``.

Each row is ``{"task", "modality", "domain", "metric", "value", "ci_low", "ci_high", "n"}``.
Tasks: ``malignancy`` (malignant against everything else), ``abnormality`` (benign or
malignant against normal, where normals exist), ``grading`` (ordinal grades, quadratic
weighted kappa) and ``localisation`` (map peak inside a lesion circle). The operating
point for sensitivity, specificity and balanced accuracy is chosen on validation
predictions (Youden's J) and frozen; without them it is 0.5, and the rows say which.
``domain`` is ``all`` (every unit with the modality), ``both modalities`` (those of them
holding a mammogram and H&E, where units with and without both mix) or one domain.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from radpath.evaluation.localisation import LocalisationMetric, scale_to_image
from radpath.evaluation.predict import MODALITY_OUTPUTS, UnitPredictions
from radpath.stats.calibration import expected_calibration_error
from radpath.stats.estimate import Estimate
from radpath.stats.metrics import (
    auc_with_ci,
    balanced_accuracy_with_ci,
    choose_threshold,
    quadratic_weighted_kappa,
    sensitivity_specificity_at,
)

TASKS = {"malignancy": lambda label: label == 2, "abnormality": lambda label: label >= 1}
# The group of units holding a mammogram and H&E. In a pseudo-paired cohort only benign
# and malignant patients get an H&E partner (H&E has no normal class), so "has H&E" predicts
# the label and the fused AUC over all units rewards that cue; over these units it cannot.
BOTH_MODALITIES = "both modalities"
# The pooled groups cross-validation tabulates: every unit, then the units with both.
SUMMARY_GROUPS = ("all", BOTH_MODALITIES)


def task_labels(predictions: UnitPredictions, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows with a known label, 0/1 targets for those rows)."""
    known = predictions.label >= 0
    return known, TASKS[task](predictions.label).astype(int)


def applicable_tasks(predictions: UnitPredictions) -> list[str]:
    """Tasks whose two classes both occur among the labelled units."""
    tasks = []
    for task in TASKS:
        known, target = task_labels(predictions, task)
        if len(set(target[known].tolist())) == 2:
            tasks.append(task)
    return tasks


def groups_of(predictions: UnitPredictions, modality: str) -> Iterator[tuple[str, np.ndarray]]:
    """``("all", rows)``, then ``(BOTH_MODALITIES, rows)`` when the units mix those with
    and without both modalities, then one ``(domain, rows)`` per domain of the modality."""
    present = predictions.has[modality]
    yield "all", present
    both = both_modalities(predictions)
    if both.any() and not both.all():
        yield BOTH_MODALITIES, present & both
    if modality == "fused":
        return
    domains = np.array(predictions.domain[modality])
    for domain in sorted(set(domains[present].tolist()) - {""}):
        yield domain, present & (domains == domain)


def both_modalities(predictions: UnitPredictions) -> np.ndarray:
    """Which units hold a mammogram and H&E."""
    return predictions.has["mammo"] & predictions.has["histo"]


def thresholds_from(validation: UnitPredictions | None) -> dict[tuple[str, str], float]:
    """Operating points per (task, modality), chosen on validation by Youden's J."""
    chosen: dict[tuple[str, str], float] = {}
    if validation is None:
        return chosen
    for task in applicable_tasks(validation):
        known, target = task_labels(validation, task)
        for modality in MODALITY_OUTPUTS:
            rows = known & validation.has[modality]
            if len(set(target[rows].tolist())) == 2:
                chosen[(task, modality)] = choose_threshold(target[rows],
                                                            validation.prob[modality][rows])
    return chosen


def metric_rows(predictions: UnitPredictions, *,
                thresholds: dict[tuple[str, str], float] | None = None,
                n_boot: int = 1000, seed: int = 0) -> list[dict[str, Any]]:
    """Every applicable metric with its 95% CI, as tidy rows."""
    thresholds = thresholds or {}
    rows: list[dict[str, Any]] = []
    for task in applicable_tasks(predictions):
        known, target = task_labels(predictions, task)
        for modality in MODALITY_OUTPUTS:
            threshold = thresholds.get((task, modality), 0.5)
            source = "validation" if (task, modality) in thresholds else "default 0.5"
            for domain, chosen in groups_of(predictions, modality):
                chosen = chosen & known
                if not chosen.any():
                    continue
                y, p = target[chosen], predictions.prob[modality][chosen]
                rows += _binary_rows(task, modality, domain, y, p, threshold, source,
                                     n_boot=n_boot, seed=seed)
    rows += _grading_rows(predictions, n_boot=n_boot, seed=seed)
    rows += _localisation_rows(predictions, n_boot=n_boot, seed=seed)
    return rows


def _binary_rows(task: str, modality: str, domain: str, y: np.ndarray, p: np.ndarray,
                 threshold: float, source: str, *, n_boot: int, seed: int
                 ) -> list[dict[str, Any]]:
    def row(metric: str, estimate: Estimate, **extra: Any) -> dict[str, Any]:
        return {"task": task, "modality": modality, "domain": domain, "metric": metric,
                **_numbers(estimate), **extra}

    out = [row("auc", auc_with_ci(y, p, n_boot=n_boot, seed=seed))]
    if len(set(y.tolist())) == 2:
        sensitivity, specificity = sensitivity_specificity_at(y, p, threshold)
        out += [row("sensitivity", sensitivity, threshold=threshold, threshold_from=source),
                row("specificity", specificity, threshold=threshold, threshold_from=source),
                row("balanced_accuracy", balanced_accuracy_with_ci(
                    y, p, threshold, n_boot=n_boot, seed=seed), threshold=threshold,
                    threshold_from=source)]
    out.append(row("ece", expected_calibration_error(y, p, n_boot=n_boot, seed=seed)))
    return out


def _grading_rows(predictions: UnitPredictions, *, n_boot: int, seed: int
                  ) -> list[dict[str, Any]]:
    if predictions.grade_prob is None:
        return []
    known = predictions.grade >= 0
    if known.sum() < 2 or len(set(predictions.grade[known].tolist())) < 2:
        return []
    predicted = predictions.grade_prob[known].argmax(axis=1)
    estimate = quadratic_weighted_kappa(predictions.grade[known], predicted,
                                        predictions.grade_prob.shape[1], n_boot=n_boot,
                                        seed=seed)
    return [{"task": "grading", "modality": "fused", "domain": "all",
             "metric": "quadratic_weighted_kappa", **_numbers(estimate)}]


def _localisation_rows(predictions: UnitPredictions, *, n_boot: int, seed: int
                       ) -> list[dict[str, Any]]:
    views = [v for v in predictions.views if len(v.lesions)]
    if not views:
        return []
    rows = []
    for domain in ["all", *sorted({v.domain for v in views})]:
        metric = LocalisationMetric(n_boot=n_boot, seed=seed)
        for view in views:
            if domain in ("all", view.domain):
                size = (view.image_size, view.image_size)
                metric.update(view.heatmap, view.lesions, size,
                              to_image=scale_to_image(view.heatmap.shape, size))
        result = metric.compute()
        for name, estimate in (("hit_rate", result.hit_rate),
                               ("mean_normalised_distance", result.mean_distance)):
            rows.append({"task": "localisation", "modality": "mammo", "domain": domain,
                         "metric": name, **_numbers(estimate)})
    return rows


def _numbers(estimate: Estimate) -> dict[str, Any]:
    def clean(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round(float(x), 6)

    return {"value": clean(estimate.value), "ci_low": clean(estimate.ci_low),
            "ci_high": clean(estimate.ci_high), "n": int(estimate.n)}
