"""``evaluate_run``: a trained run and manifests in; ``metrics.json``, ``predictions.csv``
and ``report.html`` out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radpath.atomic import atomic_path
from radpath.batch.dataset import PatientBagDataset
from radpath.data.manifest import Manifest
from radpath.data.pairing import pairing_mode
from radpath.data.preprocess import cache_manifest
from radpath.data.workflow import read_paired
from radpath.engine.checkpoint import LoadedRun, load_members
from radpath.errors import RadpathError
from radpath.evaluation.ensemble import ensemble_predictions
from radpath.evaluation.evaluate import metric_rows, thresholds_from
from radpath.evaluation.predict import (
    Predictor,
    UnitPredictions,
    predict_dataset,
    write_predictions,
)
from radpath.evaluation.report import write_report
from radpath.evaluation.summary import operating_points


@dataclass(frozen=True)
class EvaluationResult:
    metrics_path: Path
    report_path: Path
    rows: list[dict[str, Any]]
    predictions: UnitPredictions
    predictions_path: Path
    ensemble: str | None = None  # how the members were combined, when there are several


def make_predictor(run: LoadedRun, adapt: str, *, mode: str = "episodic") -> Predictor:
    """The predictor for ``adapt``: plain prediction, or a test-time adaptation method on a copy."""
    if adapt == "none":
        return run.algorithm.predict
    from radpath.adapt import TTA_METHODS, TTAConfig

    adapter = TTA_METHODS.get(adapt)(run.algorithm, TTAConfig(name=adapt, mode=mode))
    return adapter.adapt_and_predict


def evaluate_run(run_dir: str | Path | Sequence[str | Path], manifests: Sequence[str | Path],
                 out: str | Path, *, adapt: str = "none", split: str = "test",
                 workers: int | None = None, n_boot: int = 1000, progress: bool = True,
                 checkpoint: str = "best", device: str = "cpu") -> EvaluationResult:
    """Evaluate the run's ``best`` (or ``last``) checkpoint on ``split`` of ``manifests``
    (all when unsplit), predicting on ``device``
    (:data:`~radpath.engine.device_names.DEVICE_HELP`). Several run folders, or a run's
    ``snapshots`` (``optim.cycles``), are scored as one ensemble
    (:mod:`radpath.evaluation.ensemble`), each run with its own config's preprocessing and
    adaptation; the first run's seed pairs unpaired manifests. Each unit's probabilities
    go to ``predictions.csv`` (:func:`~radpath.evaluation.predict.write_predictions`, the
    split as its ``fold``), so two evaluations of the same units can be paired."""
    folders = [run_dir] if isinstance(run_dir, str | Path) else list(run_dir)
    if not folders:
        raise RadpathError("evaluate needs at least one run folder")
    runs = [member for folder in folders
            for member in load_members(folder, which=checkpoint, device=device)]
    lead = runs[0]
    manifest = read_paired(manifests, seed=lead.config.seed)
    has_splits = all(r.split for r in manifest)
    chosen = split if has_splits else None
    if chosen and not any(r.split == chosen for r in manifest):
        raise RadpathError(f"no record of the manifests is in the '{chosen}' split")
    for run in {str(run.folder): run for run in runs}.values():
        cache_manifest(manifest, run.config.data.cache_dir, run.config.data.preprocess,
                       workers=workers, progress=progress)
    names = [str(run.folder / run.checkpoint.name) for run in runs]
    predictions = ensemble_predictions(
        [_predict(run, manifest, chosen, adapt) for run in runs], names)
    validation = None
    if chosen not in (None, "val") and any(r.split == "val" for r in manifest):
        # Thresholds come from validation predictions without adaptation.
        validation = ensemble_predictions(
            [_predict(run, manifest, "val", "none") for run in runs], names)
    rows = metric_rows(predictions, thresholds=thresholds_from(validation), n_boot=n_boot)
    out = Path(out)
    metrics_path = _write_rows(rows, out / "metrics.json")
    # The operating points, recorded apart so the explainer and the viewer read the same ones.
    _write_rows(operating_points(rows), out / "operating_points.json")
    predictions_path = write_predictions(out / "predictions.csv",
                                         [(chosen or "all", predictions)])
    context = {**_run_context(runs), "adaptation": adapt,
               "split": chosen or "all (manifests have no split column)",
               "pairing": pairing_mode(manifest), "units": len(predictions),
               "operating point": ("one per task and modality, chosen on validation predictions "
                                  "(Youden's J), used by every table and figure" if validation
                                  else "0.5 (no validation split)"),
               "confidence intervals": "95%, bootstrap over patients (units)"}
    if unlabelled := int((predictions.label < 0).sum()):
        context["units without a label"] = f"{unlabelled}: in predictions.csv, in no metric"
    report = write_report(out / "report.html", predictions, rows, context,
                          n_boot=min(n_boot, 200))
    return EvaluationResult(metrics_path, report, rows, predictions, predictions_path,
                            context.get("ensemble"))


def _run_context(runs: Sequence[LoadedRun]) -> dict[str, str]:
    """The report's lines on what was scored: the run (or the ensemble's runs)."""
    folders = list(dict.fromkeys(str(run.folder) for run in runs))
    context = {"run": ", ".join(folders),
               "checkpoint": ", ".join(dict.fromkeys(run.checkpoint.name for run in runs)),
               "device": str(next(runs[0].algorithm.parameters()).device),
               "algorithm": ", ".join(sorted({run.config.algorithm.name for run in runs}))}
    if len(runs) > 1:
        context["ensemble"] = (f"mean logit of {len(runs)} runs per unit"
                               if len(runs) == len(folders) else
                               f"mean logit of {len(runs)} checkpoints of {len(folders)} "
                               f"run{'s' if len(folders) > 1 else ''} per unit")
    return context


def _predict(run: LoadedRun, manifest: Manifest, split: str | None,
             adapt: str) -> UnitPredictions:
    """``run``'s predictions on ``split`` of ``manifest``, read as its config says."""
    dataset = PatientBagDataset(manifest, run.config.data, split=split,
                                domains=run.record.get("domains", []))
    return predict_dataset(run.algorithm, dataset, predictor=make_predictor(run, adapt))


def _write_rows(rows: list[dict[str, Any]], path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
    return path
