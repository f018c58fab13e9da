"""``evaluate_run``: a trained run and manifests in; ``metrics.json`` and ``report.html`` out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radpath.atomic import atomic_path
from radpath.data.pairing import pairing_mode
from radpath.data.preprocess import cache_manifest
from radpath.data.workflow import read_paired
from radpath.engine.checkpoint import LoadedRun, load_run
from radpath.engine.data import PatientBagDataset
from radpath.errors import RadpathError
from radpath.evaluation.evaluate import metric_rows, thresholds_from
from radpath.evaluation.predict import Predictor, UnitPredictions, predict_dataset
from radpath.evaluation.report import write_report


@dataclass(frozen=True)
class EvaluationResult:
    metrics_path: Path
    report_path: Path
    rows: list[dict[str, Any]]
    predictions: UnitPredictions


def make_predictor(run: LoadedRun, adapt: str, *, mode: str = "episodic") -> Predictor:
    """The predictor for ``adapt``: plain prediction, or a test-time adapter on a copy."""
    if adapt == "none":
        return run.algorithm.predict
    from radpath.adapt import ADAPTERS_TTA, TTAConfig

    adapter = ADAPTERS_TTA.get(adapt)(run.algorithm, TTAConfig(name=adapt, mode=mode))
    return adapter.adapt_and_predict


def evaluate_run(run_dir: str | Path, manifests: Sequence[str | Path], out: str | Path, *,
                 adapt: str = "none", split: str = "test", workers: int | None = None,
                 n_boot: int = 1000, progress: bool = True, checkpoint: str = "best",
                 device: str = "cpu") -> EvaluationResult:
    """Evaluate the run's ``best`` (or ``last``) checkpoint on ``split`` of ``manifests``
    (all when unsplit), predicting on ``device``
    (:data:`~radpath.engine.device_names.DEVICE_HELP`)."""
    run = load_run(run_dir, which=checkpoint, device=device)
    manifest = read_paired(manifests, seed=run.config.seed)
    has_splits = all(r.split for r in manifest)
    chosen = split if has_splits else None
    if chosen and not any(r.split == chosen for r in manifest):
        raise RadpathError(f"no record of the manifests is in the '{chosen}' split")
    cache_manifest(manifest, run.config.data.cache_dir, run.config.data.preprocess,
                   workers=workers, progress=progress)
    vocabulary = run.record.get("domains", [])
    dataset = PatientBagDataset(manifest, run.config.data, split=chosen, domains=vocabulary)
    predictor = make_predictor(run, adapt)
    predictions = predict_dataset(run.algorithm, dataset, predictor=predictor)
    validation = None
    if chosen not in (None, "val") and any(r.split == "val" for r in manifest):
        val_set = PatientBagDataset(manifest, run.config.data, split="val", domains=vocabulary)
        validation = predict_dataset(run.algorithm, val_set)  # thresholds: no adaptation
    rows = metric_rows(predictions, thresholds=thresholds_from(validation), n_boot=n_boot)
    out = Path(out)
    metrics_path = _write_rows(rows, out / "metrics.json")
    context = {"run": str(run.folder), "checkpoint": run.checkpoint.name,
               "device": str(next(run.algorithm.parameters()).device),
               "algorithm": run.config.algorithm.name, "adaptation": adapt,
               "split": chosen or "all (manifests have no split column)",
               "pairing": pairing_mode(manifest), "units": len(predictions),
               "operating point": "chosen on validation (Youden)" if validation else "0.5",
               "confidence intervals": "95%, bootstrap over patients (units)"}
    report = write_report(out / "report.html", predictions, rows, context,
                          n_boot=min(n_boot, 200))
    return EvaluationResult(metrics_path, report, rows, predictions)


def _write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
    return path
