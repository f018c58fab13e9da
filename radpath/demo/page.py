"""The demo's ``report.html``: how well the test split is separated first (AUC with CI and
the spread of the probabilities), the explained cases, then the detail folded."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from radpath.atomic import atomic_path
from radpath.demo.cases import CASE_RULE, spread_records
from radpath.evaluation.report import STYLE, png_tag
from radpath.evaluation.summary import FEW_CASES, FLAT_IQR


def write_page(path: Path, evaluations: dict[str, Any],
                   explanations: list[dict[str, Any]], preview: Path,
                   threshold: tuple[float, str]) -> Path:
    """The demo's page: the test split's separation first, the explained cases, then the
    per-adaptation detail and the preview folded."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>radpath demo</title>"
             f"<style>{STYLE}</style></head><body><h1>radpath demo</h1>",
             "<p class='note'>Synthetic cohort: these numbers show the system working, not a "
             "result about patients.</p>",
             "<h2>Test split, no adaptation: malignancy AUC (95% CI) and the spread of the "
             "predicted probabilities</h2>", _spread_table(evaluations["none"]),
             f"<h2>Explained cases</h2><p>{html.escape(CASE_RULE)} Operating threshold: "
             f"{threshold[0]:.3f} ({html.escape(threshold[1])}).</p>"]
    if not explanations:
        parts.append("<p>No test unit fits either rule.</p>")
    for e in explanations:
        parts += [f"<h3>{html.escape(e['case'].describe())}</h3>",
                  f"<p>{html.escape(e['rationale'])}</p>",
                  png_tag(e["figure"], f"explanation of {e['patient']}")]
    parts += ["<details><summary>Test-split AUC (95% CI) by adaptation, every task</summary>",
              _adaptation_table(evaluations), "</details>",
              "<p>Full reports (calibration, probability strips, confusion matrices at the "
              "validation threshold): " + ", ".join(
                  f"<a href='eval/{a}/report.html'>{a}</a>" for a in evaluations) + "</p>",
              "<details><summary>Preprocessing preview</summary>",
              png_tag(preview.read_bytes(), "preview"), "</details></body></html>"]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path


def _spread_table(result: Any) -> str:
    head = "".join(f"<th>{c}</th>" for c in ("modality", "AUC", "p min", "p max", "p IQR",
                                             "median by class (n)"))
    body = []
    for r in spread_records(result):
        medians = ", ".join(f"{name} {m:.3f} ({n})" for name, m, n in r["classes"])
        cells = (r["modality"], r["auc"], f"{r['min']:.3f}", f"{r['max']:.3f}",
                 f"{r['iqr']:.3f}", medians)
        body.append(f"<tr{' class=warn' if r['flat'] else ''}>"
                    + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    records = spread_records(result)
    flat = [r["modality"] for r in records if r["flat"]]
    warning = (f"<p class='warn'><b>Warning.</b> {html.escape(', '.join(flat))}: predictions "
               f"barely vary (IQR &lt; {FLAT_IQR}); the AUC rests on tiny differences.</p>"
               if flat else "")
    if any(r["few"] for r in records):
        warning += (f"<p class='warn'><b>Few cases.</b> Under {FEW_CASES} of a class: each "
                    f"95% CI rests on a handful of cases.</p>")
    return f"{warning}<table class='summary'><tr>{head}</tr>{''.join(body)}</table>"


def _adaptation_table(evaluations: dict[str, Any]) -> str:
    rows = []
    for adapt, result in evaluations.items():
        for row in result.rows:
            if row["metric"] == "auc" and row["domain"] == "all" and row["value"] is not None:
                rows.append(f"<tr><td>{adapt}</td><td>{row['task']}</td><td>{row['modality']}"
                            f"</td><td>{row['value']:.3f} [{row['ci_low']:.3f}, "
                            f"{row['ci_high']:.3f}]</td><td>{row['n']}</td></tr>")
    return ("<table><tr><th>adaptation</th><th>task</th><th>modality</th><th>AUC</th>"
            "<th>n</th></tr>" + "".join(rows) + "</table>")
