"""Patient-grouped k-fold cross-validation with pooled out-of-fold predictions.

On a small cohort one validation split of a few dozen patients gives an AUC whose 95%
confidence interval spans a third of the scale, and a different split moves the figure by
as much. Cross-validation tests every unit once: each fold holds out a k-th of the units
(stratified by modality, label and domain, see :func:`radpath.data.splits.patient_folds`),
trains on the rest (with an inner validation split for checkpoint selection, never the held
out units), and predicts the held-out units. The out-of-fold predictions of all folds are
then pooled and scored together, so the AUC and its bootstrap CI rest on the whole cohort.
Pooling ranks units scored by different fold models, so it also asks the folds to agree in
scale; each fold's own AUC is reported next to the pooled one.

Pairs are formed once, before folding, so a pseudo-pair is held out as one unit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radpath.batch.dataset import PatientBagDataset
from radpath.batch.units import count_grades
from radpath.data.manifest import Manifest, Record, write_manifest
from radpath.data.pairing import pairing_mode
from radpath.data.splits import (
    check_leakage,
    group_folds,
    patient_folds,
    split_patients,
    unit_count,
)
from radpath.data.workflow import paired
from radpath.engine.checkpoint import SNAPSHOTS, load_members
from radpath.engine.config import TrainConfig, with_algorithm
from radpath.engine.devices import prediction_device
from radpath.engine.run import sized_for_grades, train
from radpath.errors import ConfigError
from radpath.evaluation.crossval_tables import write_cv_tables
from radpath.evaluation.ensemble import ensemble_predictions
from radpath.evaluation.evaluate import (
    BOTH_MODALITIES,
    SUMMARY_GROUPS,
    both_modalities,
    groups_of,
    metric_rows,
    thresholds_from,
)
from radpath.evaluation.predict import (
    MODALITY_OUTPUTS,
    UnitPredictions,
    concat_predictions,
    predict_dataset,
    write_predictions,
)
from radpath.evaluation.protocols import malignancy_auc, malignancy_scores, without_nan
from radpath.evaluation.report import write_report
from radpath.stats.delong import delong_test

# What --checkpoint may name, and how the tables say it.
CHECKPOINT_WORDS = {"best": "best on each fold's inner validation split",
                    "last": "last epoch",
                    SNAPSHOTS: "mean logit of the snapshots at the end of each cosine cycle"}
CHECKPOINT_CHOICES = tuple(CHECKPOINT_WORDS)

# Share of a fold's training units kept aside to select checkpoints on.
VAL_FRACTION = 0.15


@dataclass
class FoldPredictions:
    """One algorithm's predictions on one fold: the held-out units and the inner validation."""

    fold: str
    test: UnitPredictions
    val: UnitPredictions
    # Each member's held-out predictions by checkpoint name, when ``test`` is an ensemble.
    members: dict[str, UnitPredictions] = field(default_factory=dict)


def cv_manifests(manifest: Manifest, k: int, *, seed: int = 0, val_fraction: float = VAL_FRACTION,
                 group_of: Callable[[Record], str] | None = None
                 ) -> list[tuple[str, Manifest]]:
    """One manifest per fold: its held-out units as ``test``, the rest split by patient
    into ``train`` and ``val`` (``val_fraction`` of them, in proportion across strata, and
    at least one when the fold trains on two or more). Pairs unpaired manifests first.

    The folds are ``k`` patient-grouped folds, or with ``group_of`` one fold per group of
    records (:func:`radpath.data.splits.group_folds`; ``k`` is then unused)."""
    manifest = paired(manifest, seed=seed)
    folds = []
    splits = (patient_folds(manifest, k, seed=seed) if group_of is None
              else group_folds(manifest, group_of))
    for fold in splits:
        # In proportion only: the one-unit-per-stratum rule would put about half of a cohort
        # of small strata (H&E: 2-3 units each) in the inner validation split.
        # A fraction that rounds to no unit would leave nothing to select checkpoints on.
        units = unit_count(fold.train)
        share = max(val_fraction, 1 / units) if units >= 2 else val_fraction
        inner = split_patients(fold.train, fractions=(1 - share, share),
                               seed=seed, names=("train", "val"), one_per_stratum=False)
        held_out = [r.with_(split="test") for r in fold.test]
        combined = Manifest([*inner, *held_out], source=manifest.source)
        check_leakage(combined)
        folds.append((fold.name, combined))
    return folds


def run_cv(config: TrainConfig, manifest: Manifest, out: str | Path, *, k: int = 3,
           algorithms: Sequence[str] = ("erm",), val_fraction: float = VAL_FRACTION,
           checkpoint: str = "best", workers: int | None = None,
           n_boot: int = 1000, group_of: Callable[[Record], str] | None = None,
           ) -> list[dict[str, Any]]:
    """Train every algorithm on every fold; score the pooled out-of-fold predictions.

    ``checkpoint`` is ``best`` (on the fold's inner validation split), ``last`` or
    ``snapshots`` (the mean logit of the snapshots of ``optim.cycles``): with an inner
    validation split of a handful of units, ``best`` is close to a random epoch.
    ``group_of`` folds by group instead of by patient (see :func:`cv_manifests`).

    Writes ``cv.json`` (every metric row, pooled and per fold), ``cv.md`` (the summary
    table), and per algorithm ``<algorithm>/report.html`` and ``predictions.csv`` (with
    ``snapshots``, each snapshot's too: ``<algorithm>/members/snapshot-EEE.csv``).
    """
    if checkpoint not in CHECKPOINT_CHOICES:
        raise ConfigError(f"checkpoint must be one of {', '.join(CHECKPOINT_CHOICES)}, got "
                          f"{checkpoint!r}")
    if checkpoint == SNAPSHOTS and config.optim.cycles < 2:
        raise ConfigError("checkpoint 'snapshots' needs optim.cycles of 2 or more, got "
                          f"{config.optim.cycles}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be between 0 and 1 (exclusive), got "
                          f"{val_fraction!r}")
    out = Path(out)
    folds = cv_manifests(manifest, k, seed=config.seed, val_fraction=val_fraction,
                         group_of=group_of)
    config = _grades_of_cohort(config, manifest)
    # Every algorithm's config checked before the first fold trains.
    settings_of = {name: with_algorithm(config, name) for name in algorithms}
    results: dict[str, list[FoldPredictions]] = {name: [] for name in algorithms}
    for name, fold_manifest in folds:
        fold_csv = write_manifest(fold_manifest, out / name / "manifest.csv")
        for algorithm in algorithms:
            settings = settings_of[algorithm]
            run_dir = out / name / algorithm
            train(settings, [fold_csv], run_dir, workers=workers)
            results[algorithm].append(_predict_fold(name, run_dir, fold_manifest, checkpoint))
    scheme = (f"{k}-fold cross-validation by patient" if group_of is None
              else f"leave-one-group-out over {len(folds)} groups")
    context = {"protocol": f"{scheme}, out-of-fold predictions pooled",
               "pairing": pairing_mode(folds[0][1]),
               "checkpoint": CHECKPOINT_WORDS[checkpoint],
               "confidence intervals": "95%, bootstrap over units"}
    rows = _score(results, out, context, n_boot)
    write_cv_tables(rows, out, context)
    return rows


def _score(results: dict[str, list[FoldPredictions]], out: Path, context: dict[str, Any],
           n_boot: int) -> list[dict[str, Any]]:
    """Metric rows of the pooled and per-fold predictions; a report and the out-of-fold
    probabilities per algorithm."""
    rows: list[dict[str, Any]] = []
    pooled = {a: concat_predictions([f.test for f in fs]) for a, fs in results.items()}
    for algorithm, fold_results in results.items():
        thresholds = thresholds_from(concat_predictions([f.val for f in fold_results]))
        pooled_rows = metric_rows(pooled[algorithm], thresholds=thresholds, n_boot=n_boot)
        rows += [{"algorithm": algorithm, "scope": "pooled", **r} for r in pooled_rows]
        rows += _fold_rows(algorithm, fold_results)
        write_report(out / algorithm / "report.html", pooled[algorithm], pooled_rows,
                     {**context, "algorithm": algorithm, "units": len(pooled[algorithm])},
                     n_boot=min(n_boot, 200))
        write_predictions(out / algorithm / "predictions.csv",
                          [(f.fold, f.test) for f in fold_results])
        _write_member_predictions(out / algorithm / "members", fold_results)
    return rows + _delong_rows(pooled) + _fusion_rows(pooled)


def _grades_of_cohort(config: TrainConfig, manifest: Manifest) -> TrainConfig:
    """Size the grading head from the whole cohort, not from each fold's training part,
    so that every fold predicts the same grades (a fold may lack the highest one)."""
    grades = count_grades(manifest, config.data.grade_column)
    return config.model_copy(update={"model": sized_for_grades(config.model, grades)})


def _predict_fold(name: str, run_dir: Path, manifest: Manifest,
                  checkpoint: str) -> FoldPredictions:
    members = load_members(run_dir, which=checkpoint)
    labels = [str(member.checkpoint) for member in members]
    run = members[0]
    for member in members:
        member.algorithm.to(prediction_device(run.config.trainer))
    vocabulary = run.record.get("domains", [])

    def predict(split: str) -> list[UnitPredictions]:
        dataset = PatientBagDataset(manifest, run.config.data, split=split, domains=vocabulary)
        return [predict_dataset(member.algorithm, dataset) for member in members]

    test = predict("test")
    alone = ({m.checkpoint.stem: p for m, p in zip(members, test, strict=True)}
             if len(members) > 1 else {})
    return FoldPredictions(name, ensemble_predictions(test, labels),
                           ensemble_predictions(predict("val"), labels), alone)


def _fold_rows(algorithm: str, folds: list[FoldPredictions]) -> list[dict[str, Any]]:
    """Malignancy AUC of each fold on its own held-out units, to show the spread."""
    rows = []
    for fold in folds:
        for modality in MODALITY_OUTPUTS:
            for group, among in _unit_groups(fold.test, modality):
                if among.any():
                    estimate = malignancy_auc(fold.test, modality, among)[0]
                    rows.append({"algorithm": algorithm, "scope": fold.fold,
                                 "task": "malignancy", "modality": modality, "domain": group,
                                 "metric": "auc", **without_nan(estimate.as_dict())})
    return rows


def _unit_groups(predictions: UnitPredictions, modality: str) -> list[tuple[str, np.ndarray]]:
    """All units with ``modality``, and those of them with both modalities where the units
    mix the two kinds (see :data:`radpath.evaluation.evaluate.BOTH_MODALITIES`)."""
    return [(group, among) for group, among in groups_of(predictions, modality)
            if group in SUMMARY_GROUPS]


def _delong_rows(pooled: dict[str, UnitPredictions]) -> list[dict[str, Any]]:
    """DeLong's test of each algorithm against ERM on the same pooled units."""
    if "erm" not in pooled:
        return []
    rows = []
    for algorithm, predictions in pooled.items():
        if predictions.unit_id != pooled["erm"].unit_id:
            raise RuntimeError("cross-validation predictions of two algorithms cover "
                               "different units")
        for modality in MODALITY_OUTPUTS if algorithm != "erm" else ():
            for group, among in _unit_groups(predictions, modality):
                target, scores = malignancy_scores(predictions, modality, among)
                reference = malignancy_scores(pooled["erm"], modality, among)[1]
                if len(set(target.tolist())) == 2:
                    rows.append({"algorithm": algorithm, "scope": "pooled",
                                 "task": "malignancy", "modality": modality, "domain": group,
                                 "metric": "delong_p_vs_erm",
                                 "value": delong_test(target, scores, reference).p_value,
                                 "n": len(target)})
    return rows


def _fusion_rows(pooled: dict[str, UnitPredictions]) -> list[dict[str, Any]]:
    """DeLong's test of the fused head against each modality alone, on the units that hold
    both: whether fusing adds to the better modality on the same patients."""
    rows = []
    for algorithm, predictions in pooled.items():
        both = both_modalities(predictions)
        target, fused = malignancy_scores(predictions, "fused", both)
        if len(set(target.tolist())) < 2:
            continue
        for modality in ("mammo", "histo"):
            alone = malignancy_scores(predictions, modality, both)[1]
            rows.append({"algorithm": algorithm, "scope": "pooled", "task": "malignancy",
                         "modality": "fused", "domain": BOTH_MODALITIES,
                         "metric": f"delong_p_fused_vs_{modality}",
                         "value": delong_test(target, fused, alone).p_value,
                         "n": len(target)})
    return rows


def _write_member_predictions(folder: Path, folds: list[FoldPredictions]) -> None:
    """Each ensemble member's out-of-fold probabilities, ``folder/<checkpoint>.csv``, for
    the checkpoints every fold has (snapshots are taken at the same epochs in each)."""
    names = set.intersection(*(set(fold.members) for fold in folds))
    for name in sorted(names):
        write_predictions(folder / f"{name}.csv", [(f.fold, f.members[name]) for f in folds])
