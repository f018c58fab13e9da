"""Protocols: leave-one-domain-out and held-out test, comparing algorithms and adaptations.

Leave-one-domain-out (LODO): for each held-out domain, the other domains' patients are
re-paired and split into train / val / in-domain test (by patient); every algorithm is
trained on them, then evaluated on the in-domain test (no adaptation) and on the unseen
domain (with each test-time adaptation). The table gives, per fold and modality, the
malignancy AUC with its 95% CI in and out of domain, the domain gap (in minus unseen) and
DeLong's p-value of each algorithm against ERM on the same unseen cases.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from radpath.atomic import atomic_path
from radpath.batch.dataset import PatientBagDataset
from radpath.data.manifest import Manifest, write_manifest
from radpath.data.pairing import pair_modalities
from radpath.data.splits import lodo_folds, split_patients
from radpath.engine.checkpoint import load_run
from radpath.engine.config import TrainConfig, with_algorithm
from radpath.engine.devices import prediction_device
from radpath.engine.run import train
from radpath.errors import RadpathError
from radpath.evaluation.predict import UnitPredictions, predict_dataset
from radpath.evaluation.runner import make_predictor
from radpath.stats.delong import delong_test
from radpath.stats.metrics import auc_with_ci


@dataclass(frozen=True)
class FoldData:
    """The manifests of one fold: where to train, and the two test sets."""

    name: str
    train: Manifest  # with train / val / test splits inside the training domains
    unseen: Manifest


def make_lodo_folds(manifest: Manifest, *, column: str = "domain",
                    holdout: Sequence[str] = (), seed: int = 0,
                    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> list[FoldData]:
    """LODO folds (only those in ``holdout`` when given), re-paired and split by patient."""
    folds = []
    for fold in lodo_folds(manifest, column):
        if holdout and fold.name not in holdout:
            continue
        inside = split_patients(pair_modalities(fold.train, seed=seed), fractions=fractions,
                                seed=seed)
        unseen = pair_modalities(fold.test, seed=seed)
        folds.append(FoldData(fold.name, inside, unseen))
    if not folds:
        raise RadpathError(f"no fold left: --holdout {list(holdout)} names no value of "
                           f"column '{column}'")
    return folds


def malignancy_auc(predictions: UnitPredictions, modality: str,
                   among: np.ndarray | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """Malignancy AUC with its CI over the labelled units having ``modality`` (and in the
    boolean mask ``among`` when given), with the targets and scores it was computed from."""
    target, scores = malignancy_scores(predictions, modality, among)
    return auc_with_ci(target, scores, n_boot=1000), target, scores


def malignancy_scores(predictions: UnitPredictions, modality: str,
                      among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """0/1 malignancy targets and ``modality``'s scores of the units :func:`malignancy_auc`
    reads: for tests that need no bootstrap."""
    rows = predictions.has[modality] & (predictions.label >= 0)
    if among is not None:
        rows &= among
    return (predictions.label[rows] == 2).astype(int), predictions.prob[modality][rows]


def run_lodo(config: TrainConfig, manifest: Manifest, out: str | Path, *,
             algorithms: Sequence[str] = ("erm", "paper"),
             adaptations: Sequence[str] = ("none",), column: str = "domain",
             holdout: Sequence[str] = (), workers: int | None = None) -> list[dict[str, Any]]:
    """Train and evaluate every algorithm on every fold; write ``lodo.json`` and ``lodo.md``."""
    out = Path(out)
    # Every algorithm's config checked before the first fold trains.
    settings_of = {name: with_algorithm(config, name) for name in algorithms}
    rows: list[dict[str, Any]] = []
    for fold in make_lodo_folds(manifest, column=column, holdout=holdout, seed=config.seed):
        fold_dir = out / safe_name(fold.name)
        train_csv = write_manifest(fold.train, fold_dir / "train.csv")
        for name in algorithms:
            settings = settings_of[name]
            train(settings, [train_csv], fold_dir / name, workers=workers)
            run = load_run(fold_dir / name, device=prediction_device(settings.trainer))
            vocabulary = run.record.get("domains", [])
            inside = predict_dataset(run.algorithm, PatientBagDataset(
                fold.train, run.config.data, split="test", domains=vocabulary))
            unseen_set = PatientBagDataset(fold.unseen, run.config.data, domains=vocabulary)
            for adapt in adaptations:
                unseen = predict_dataset(run.algorithm, unseen_set,
                                         predictor=make_predictor(run, adapt))
                rows += _fold_rows(fold.name, name, adapt, inside, unseen)
    rows = _add_delong(rows, scores_by_key=_collect(rows))
    _write_tables(rows, out)
    return rows


def _fold_rows(fold: str, algorithm: str, adapt: str, inside: UnitPredictions,
               unseen: UnitPredictions) -> list[dict[str, Any]]:
    rows = []
    for modality in ("mammo", "histo"):
        if not unseen.has[modality].any():
            continue
        unseen_auc, target, score = malignancy_auc(unseen, modality)
        inside_auc, _, _ = malignancy_auc(inside, modality)
        gap = (inside_auc.value - unseen_auc.value
               if not (math.isnan(inside_auc.value) or math.isnan(unseen_auc.value))
               else float("nan"))
        rows.append({"fold": fold, "algorithm": algorithm, "adaptation": adapt,
                     "modality": modality, "in_domain": inside_auc.as_dict(),
                     "unseen": unseen_auc.as_dict(), "gap": gap,
                     "_target": target.tolist(), "_scores": score.tolist()})
    return rows


def _collect(rows: list[dict[str, Any]]) -> dict:
    return {(r["fold"], r["modality"], r["adaptation"], r["algorithm"]):
            (np.array(r["_target"]), np.array(r["_scores"])) for r in rows}


def _add_delong(rows: list[dict[str, Any]], scores_by_key: dict) -> list[dict[str, Any]]:
    """DeLong p-value of each algorithm against ERM with the same adaptation and fold."""
    for row in rows:
        reference = scores_by_key.get((row["fold"], row["modality"], row["adaptation"], "erm"))
        target, scores = np.array(row.pop("_target")), np.array(row.pop("_scores"))
        row["delong_p_vs_erm"] = None
        if reference is None or row["algorithm"] == "erm" or len(set(target.tolist())) < 2:
            continue
        row["delong_p_vs_erm"] = delong_test(target, scores, reference[1]).p_value
    return rows


def _write_tables(rows: list[dict[str, Any]], out: Path) -> None:
    with atomic_path(out / "lodo.json") as tmp:
        tmp.write_text(json.dumps(without_nan(rows), indent=1) + "\n")
    lines = ["| held-out domain | modality | algorithm | adaptation | in-domain AUC [95% CI] | "
             "unseen AUC [95% CI] | gap | DeLong p vs ERM |", "|" + "---|" * 8]
    for r in rows:
        p = r["delong_p_vs_erm"]
        lines.append(f"| {r['fold']} | {r['modality']} | {r['algorithm']} | {r['adaptation']} "
                     f"| {format_estimate(r['in_domain'])} | {format_estimate(r['unseen'])} "
                     f"| {_num(r['gap'])} | "
                     f"{'–' if p is None else f'{p:.3f}'} |")
    lines += ["", *summary_lines(rows)]
    with atomic_path(out / "lodo.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Mean unseen AUC and mean gap per algorithm and adaptation, over folds."""
    lines = ["| algorithm | adaptation | mean unseen AUC | mean gap | folds |",
             "|---|---|---|---|---|"]
    for (algorithm, adapt), (unseen, gap, folds) in summary_of(rows).items():
        lines.append(f"| {algorithm} | {adapt} | {_num(unseen)} | {_num(gap)} | {folds} |")
    return lines


def summary_of(rows: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(mean unseen AUC, mean gap, rows) over the folds and modalities of each (algorithm,
    adaptation), sorted; undefined AUCs (one class) are left out of the means."""
    summary = {}
    for key in sorted({(r["algorithm"], r["adaptation"]) for r in rows}):
        chosen = [r for r in rows if (r["algorithm"], r["adaptation"]) == key]
        unseen = [r["unseen"]["value"] for r in chosen if not _undefined(r["unseen"]["value"])]
        gaps = [r["gap"] for r in chosen if not _undefined(r["gap"])]
        summary[key] = (float(np.mean(unseen)) if unseen else math.nan,
                        float(np.mean(gaps)) if gaps else math.nan, len(chosen))
    return summary


def _undefined(x: float | None) -> bool:
    return x is None or math.isnan(x)


def format_estimate(estimate: dict[str, Any]) -> str:
    """``AUC [low, high] (n=N)``, or a dash when the AUC is undefined (one class: NaN, or
    None as in JSON rows)."""
    if estimate["value"] is None or math.isnan(estimate["value"]):
        return f"– (n={estimate['n']}, one class)"
    return (f"{estimate['value']:.3f} [{estimate['ci_low']:.3f}, {estimate['ci_high']:.3f}] "
            f"(n={estimate['n']})")


def _num(x: float) -> str:
    return "–" if _undefined(x) else f"{x:+.3f}" if x < 0 else f"{x:.3f}"


def without_nan(value: Any) -> Any:
    """JSON has no NaN: undefined figures (one class present) become null."""
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def safe_name(name: str) -> str:
    """``name`` usable as a folder name (anything but letters, digits, ``-_.`` becomes _)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "fold"
