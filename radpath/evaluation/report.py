"""A self-contained ``report.html``: tables and figures embedded, no external files."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from radpath.atomic import atomic_path
from radpath.evaluation.evaluate import applicable_tasks, groups_of, task_labels
from radpath.evaluation.plots import (
    ReliabilityCurve,
    RocCurve,
    confusion_figure,
    reliability_figure,
    roc_figure,
)
from radpath.evaluation.plots_dist import probability_strip_figure
from radpath.evaluation.predict import MODALITY_OUTPUTS, UnitPredictions, ViewResult
from radpath.evaluation.summary import (
    FEW_CASES,
    spread,
    summary_row,
    threshold_of,
    warnings_for,
)
from radpath.stats.metrics import confusion

STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px}
th{background:#f0f0f0}img{max-width:100%}
.figs{display:grid;grid-template-columns:1fr 1fr;gap:8px 16px;align-items:center}
.figs img{width:100%}
.note{color:#666;font-size:13px}.warn{background:#fff3cd;border:1px solid #e0b000;
padding:6px 10px;font-size:14px}
.gallery img{width:220px;margin:4px}"""


def png_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_report(path: str | Path, predictions: UnitPredictions, rows: Sequence[dict[str, Any]],
                 context: dict[str, Any], *, n_boot: int = 200) -> Path:
    """Write the evaluation report for ``predictions`` and their metric ``rows``."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>radpath evaluation"
             f"</title><style>{STYLE}</style></head><body><h1>radpath evaluation</h1>",
             _context_table(context), _pairing_note(context),
             *_warnings(predictions), "<h2>Summary (95% CI)</h2>",
             _summary_table(predictions, rows),
             "<details><summary>Every metric, by domain</summary>", _metric_table(rows),
             "</details>"]
    for task in applicable_tasks(predictions):
        parts.append(f"<h2>{html.escape(task)}</h2><div class='figs'>")
        parts += _task_figures(predictions, rows, task, n_boot)
        parts.append("</div>")
    gallery = _localisation_gallery(predictions.views)
    if gallery:
        parts += ["<h2>Localisation examples</h2><p class='note'>Heatmap of the localisation "
                  "head over the preprocessed mammogram; green circles are the annotated "
                  "lesions, the white cross is the map's peak.</p><div class='gallery'>",
                  *gallery, "</div>"]
    parts.append("</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return Path(path)


def _pairing_note(context: dict[str, Any]) -> str:
    if context.get("pairing") not in ("pseudo", "mixed"):
        return ""
    return ("<p class='note'><b>Pseudo-pairs.</b> Mammograms and histology here come from "
            "different patients matched by label. Fused figures combine two independent "
            "cases of the same label, and whether a unit has a partner at all depends on its "
            "label, so fused metrics are optimistic and are not a clinical estimate; read the "
            "per-modality rows.</p>")


def _context_table(context: dict[str, Any]) -> str:
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in context.items())
    return f"<table>{cells}</table>"


def _warnings(predictions: UnitPredictions) -> list[str]:
    """One warning per flat output; the outputs resting on few cases in one line."""
    flat, few = [], []
    for task in applicable_tasks(predictions):
        known, target = task_labels(predictions, task)
        for modality in MODALITY_OUTPUTS:
            chosen = known & predictions.has[modality]
            if not chosen.any():
                continue
            y, p = target[chosen], predictions.prob[modality][chosen]
            flat += [f"{task}, {w}" for w in warnings_for(modality, y, p)
                     if "barely vary" in w]
            positives, negatives = int((y == 1).sum()), int((y == 0).sum())
            if min(positives, negatives) < FEW_CASES:
                few.append(f"{task} {modality} {positives}/{negatives}")
    if few:
        flat.append(f"Few cases (positive/negative): {'; '.join(few)}. Under {FEW_CASES} of "
                    f"a class, the 95% CI rests on a handful of cases.")
    return [f"<p class='warn'><b>Warning.</b> {html.escape(w)}</p>" for w in flat]


def _ci(row: dict[str, Any] | None) -> str:
    if row is None or row["value"] is None:
        return "–"
    if row["ci_low"] is None:
        return f"{row['value']:.3f}"
    return f"{row['value']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


SUMMARY_COLUMNS = ("task", "modality", "AUC", "ECE", "threshold", "sensitivity",
                   "specificity", "p min", "p max", "p IQR", "n (pos/neg)")


def _summary_table(predictions: UnitPredictions, rows: Sequence[dict[str, Any]]) -> str:
    """One line per (task, modality) over all units; the per-domain detail is folded."""
    body = []
    for task in applicable_tasks(predictions):
        known, target = task_labels(predictions, task)
        for modality in MODALITY_OUTPUTS:
            chosen = known & predictions.has[modality]
            if not chosen.any():
                continue
            found = summary_row(rows, task, modality)
            threshold, source = threshold_of(rows, task, modality)
            s = spread(predictions.prob[modality][chosen])
            y = target[chosen]
            cells = (task, modality, _ci(found.get("auc")), _ci(found.get("ece")),
                     f"{threshold:.3f} ({source})", _ci(found.get("sensitivity")),
                     _ci(found.get("specificity")), f"{s['min']:.3f}", f"{s['max']:.3f}",
                     f"{s['iqr']:.3f}", f"{int((y == 1).sum())}/{int((y == 0).sum())}")
            body.append(f"<tr data-task='{task}' data-modality='{modality}'"
                        f" data-threshold='{threshold:.6f}'>"
                        + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{c}</th>" for c in SUMMARY_COLUMNS)
    return f"<table class='summary'><tr>{head}</tr>{''.join(body)}</table>"


def _metric_table(rows: Sequence[dict[str, Any]]) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("task", "modality", "domain", "metric", "value",
                                             "95% CI", "n"))
    body = []
    for row in rows:
        value = "–" if row["value"] is None else f"{row['value']:.3f}"
        ci = ("–" if row["ci_low"] is None else f"[{row['ci_low']:.3f}, {row['ci_high']:.3f}]")
        body.append("<tr>" + "".join(f"<td>{html.escape(str(x))}</td>" for x in (
            row["task"], row["modality"], row["domain"], row["metric"], value, ci, row["n"]))
            + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _task_figures(predictions: UnitPredictions, rows_: Sequence[dict[str, Any]], task: str,
                  n_boot: int) -> list[str]:
    known, target = task_labels(predictions, task)
    figures = []
    for modality in MODALITY_OUTPUTS:
        curves = []
        for domain, rows in groups_of(predictions, modality):
            rows = rows & known
            if len(set(target[rows].tolist())) == 2:
                curves.append(RocCurve.from_scores(f"{domain} (n={int(rows.sum())})",
                                                   target[rows], predictions.prob[modality][rows],
                                                   n_boot=n_boot))
        if not curves:
            continue
        figures.append(png_tag(roc_figure(curves, title=f"{task}: {modality} ROC"),
                               f"ROC {modality}"))
        rows = known & predictions.has[modality]
        y, p = target[rows], predictions.prob[modality][rows]
        # The one operating point of the summary table, for every thresholded figure.
        threshold, source = threshold_of(rows_, task, modality)
        figures.append(png_tag(probability_strip_figure(
            y, p, threshold, labels=("other", task),
            title=f"{task}: {modality} probabilities by class"), f"probabilities {modality}"))
        figures.append(png_tag(reliability_figure(
            [ReliabilityCurve.from_predictions(modality, y, p, n_boot=n_boot)],
            title=f"{task}: {modality} reliability"), f"reliability {modality}"))
        matrix = confusion(y, (p >= threshold).astype(int), [0, 1])
        (tn, fp), (fn, tp) = matrix.tolist()
        figures.append(png_tag(confusion_figure(
            matrix, ["other", task], title=f"{modality} at {threshold:.3f} ({source})"),
            f"confusion {task} {modality} at threshold {threshold:.6f}: "
            f"tn={tn} fp={fp} fn={fn} tp={tp}"))
    return figures


def _localisation_gallery(views: Sequence[ViewResult], limit: int = 8) -> list[str]:
    chosen = [v for v in views if len(v.lesions)][:limit]
    return [png_tag(overlay(v), v.image_id) for v in chosen]


def overlay(view: ViewResult) -> bytes:
    """The preprocessed mammogram with the map, lesion circles and the map's peak."""
    grey = (np.clip(view.image, 0, 1) * 255).astype(np.uint8)
    size = grey.shape[0]
    heat = view.heatmap - view.heatmap.min()
    heat = (heat / max(float(heat.max()), 1e-8) * 255).astype(np.uint8)
    heat = cv2.resize(heat, (size, size), interpolation=cv2.INTER_CUBIC)
    coloured = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
    image = cv2.addWeighted(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), 0.6, coloured, 0.4, 0)
    for x, y, r in view.lesions:
        cv2.circle(image, (round(x), round(y)), max(2, round(r)), (0, 255, 0), 2)
    row, col = np.unravel_index(int(np.argmax(view.heatmap)), view.heatmap.shape)
    cell = size / view.heatmap.shape[0]
    centre = (round((col + 0.5) * cell), round((row + 0.5) * cell))
    cv2.drawMarker(image, centre, (255, 255, 255), cv2.MARKER_CROSS, 14, 2)
    ok, png = cv2.imencode(".png", image)
    return png.tobytes() if ok else b""
