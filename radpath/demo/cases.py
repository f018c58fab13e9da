"""Which test cases the demo explains, by a stated rule, and its printed summary lines."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpath.data.manifest import LABELS
from radpath.evaluation.predict import MODALITY_OUTPUTS, UnitPredictions
from radpath.evaluation.summary import FEW_CASES, FLAT_IQR, spread, summary_row
from radpath.explain.verdict import digits

CASE_RULE = ("Cases explained, among the test units with mammograms (an explanation needs "
             "them): the most confident correct malignant case (the malignant unit with the "
             "highest fused probability at or above the operating threshold) and the most "
             "confident error (the unit whose fused probability lies furthest from the "
             "threshold on the wrong side).")
MALIGNANT = LABELS.index("malignant")


@dataclass(frozen=True)
class ChosenCase:
    role: str  # "correct malignant" or "error"
    patient: str  # the unit's mammography patient
    histo_patients: tuple[str, ...]  # its histology patients: itself, another, or none
    label: int
    probability: float
    threshold: float

    def describe(self) -> str:
        """'error: syn-p031, truly benign; fused probability 0.712 >= threshold 0.405'."""
        n = max(3, digits(self.probability, self.threshold))
        sign = ">=" if self.probability >= self.threshold else "<"
        return (f"{self.role}: {self.patient}, truly {LABELS[self.label]}; fused probability "
                f"{self.probability:.{n}f} {sign} threshold {self.threshold:.{n}f}")


def choose_cases(predictions: UnitPredictions, threshold: float) -> list[ChosenCase]:
    """The most confident correct malignant case and the most confident error, when any."""
    rows = np.flatnonzero(predictions.has["fused"] & predictions.has["mammo"]
                          & (predictions.label >= 0))
    p, y = predictions.prob["fused"], predictions.label
    chosen = []
    hits = [i for i in rows if y[i] == MALIGNANT and p[i] >= threshold]
    if hits:
        best = max(hits, key=lambda i: p[i])
        chosen.append(_case("correct malignant", predictions, best, threshold))
    errors = [i for i in rows if (y[i] == MALIGNANT) != (p[i] >= threshold)]
    if errors:
        worst = max(errors, key=lambda i: abs(p[i] - threshold))
        chosen.append(_case("error", predictions, worst, threshold))
    return chosen


def _case(role: str, predictions: UnitPredictions, i: int, threshold: float) -> ChosenCase:
    def ids(modality: str) -> tuple[str, ...]:
        joined = (predictions.patients.get(modality) or [""] * len(predictions))[i]
        return tuple(x for x in joined.split(";") if x)

    mammo = ids("mammo")
    return ChosenCase(role, mammo[0] if mammo else predictions.unit_id[i], ids("histo"),
                      int(predictions.label[i]), float(predictions.prob["fused"][i]),
                      threshold)


def spread_records(result: Any) -> list[dict[str, Any]]:
    """Per modality of one evaluation: malignancy AUC [95% CI]; min, max and IQR of the test
    probabilities; each class's median and count; whether the predictions barely vary."""
    predictions: UnitPredictions = result.predictions
    records = []
    for modality in MODALITY_OUTPUTS:
        rows = predictions.has[modality] & (predictions.label >= 0)
        if not rows.any():
            continue
        p, malignant = predictions.prob[modality][rows], predictions.label[rows] == MALIGNANT
        auc = summary_row(result.rows, "malignancy", modality).get("auc")
        shown = ("–" if auc is None or auc["value"] is None else
                 f"{auc['value']:.3f} [{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]")
        s = spread(p)
        records.append({
            "modality": modality, "auc": shown, **s, "flat": s["iqr"] < FLAT_IQR,
            "few": min(int(malignant.sum()), int((~malignant).sum())) < FEW_CASES,
            "classes": [(name, float(np.median(p[mask])), int(mask.sum()))
                        for name, mask in (("malignant", malignant), ("other", ~malignant))
                        if mask.any()]})
    return records


def spread_lines(result: Any) -> list[str]:
    """:func:`spread_records` as lines of text."""
    lines = []
    for r in spread_records(result):
        medians = "  ".join(f"{name} median {m:.3f} (n={n})" for name, m, n in r["classes"])
        flag = f"  WARNING: predictions barely vary (IQR < {FLAT_IQR})" if r["flat"] else ""
        lines.append(f"{r['modality']:<6} AUC {r['auc']}  p min {r['min']:.3f} "
                     f"max {r['max']:.3f} IQR {r['iqr']:.3f}  {medians}{flag}")
    return lines


def summary_lines(evaluations: dict[str, Any], threshold: tuple[float, str],
                  cases: Sequence[tuple[ChosenCase, str]]) -> list[str]:
    """The demo's printed summary: what the numbers are, how well the test split is
    separated, the operating threshold, the explained cases and their rationales."""
    lines = ["Synthetic cohort: these numbers show the system working, not a result about "
             "patients.", "Test split, no adaptation, malignancy: AUC [95% CI] and the spread "
             "of the predicted probabilities", *("  " + x for x in spread_lines(
                 evaluations["none"]))]
    if any(r["few"] for r in spread_records(evaluations["none"])):
        lines.append(f"  Few cases: under {FEW_CASES} of a class, each CI rests on a handful "
                     f"of cases.")
    for adapt, result in evaluations.items():
        if adapt != "none":
            auc = summary_row(result.rows, "malignancy", "fused").get("auc")
            if auc and auc["value"] is not None:
                lines.append(f"  fused AUC with {adapt}: {auc['value']:.3f} "
                             f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}]")
    lines += [f"Operating threshold (fused malignancy): {threshold[0]:.3f} ({threshold[1]})",
              CASE_RULE]
    if not cases:
        lines.append("  (no test unit fits either rule)")
    for case, rationale in cases:
        lines += [f"  {case.describe()}", f"    {rationale}"]
    return lines
