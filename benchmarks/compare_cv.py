"""Two sets of predictions of the same units compared: DeLong's paired test per modality.

    .venv/bin/python benchmarks/compare_cv.py A/predictions.csv B/predictions.csv
        [--task malignancy|abnormality]
    .venv/bin/python benchmarks/compare_cv.py A1.csv,A2.csv B1.csv,B2.csv
    .venv/bin/python benchmarks/compare_cv.py JOINT/predictions.csv BASELINE/seed-0.csv
        --key histo_patients

Given the pooled out-of-fold ``predictions.csv`` of two runs of ``benchmarks/real_cpu_cv.py``
(``WORK/cv/erm/predictions.csv``) with the same seed, hence the same folds, this prints for
each output (mammography, H&E, fused; fused again on the units holding both modalities)
the AUC of malignancy (``--task abnormality``: of any finding) of A and of B on the units
both scored, each with its 95% bootstrap interval, B minus A with its 95% interval, and
DeLong's p. The units are the same, so the test is paired: it sees a change that two
separate bootstrap intervals, each a third of the scale wide, would hide. The
``predictions.csv`` that ``radpath evaluate`` writes has the same columns, so two
evaluations of the same split compare the same way (units without a label count in no AUC).

A side given as several files joined by commas is their ensemble: each unit scored by the
mean of its logits over the runs (seeds, say), and only the units every run scored. Each
run's out-of-fold score already comes from a model that never saw the unit, so the mean
does too, even where the runs' folds differ.

``--key histo_patients`` (or ``mammo_patients``) pairs the rows by the patients whose
images of that modality a unit holds, instead of by unit: a joint run's pseudo-pair
``pseudo-0012`` then meets the H&E-only unit of its H&E patient, in an H&E-only CV or in a
baseline's ``real_baselines.py --scores`` file. Compare that modality's output alone: the
other outputs of a pseudo-pair read the other patient too.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from radpath.evaluation.ensemble import mean_logit
from radpath.evaluation.evaluate import BOTH_MODALITIES, TASKS
from radpath.evaluation.predict import PATIENT_COLUMNS
from radpath.evaluation.predict import PREDICTION_COLUMNS as OUTPUTS
from radpath.stats.delong import delong_test
from radpath.stats.estimate import Estimate
from radpath.stats.metrics import auc_with_ci

KEYS = ("unit_id", *PATIENT_COLUMNS.values())


def read_predictions(path: Path, key: str = "unit_id") -> dict[str, dict[str, str]]:
    """``{key: row}`` of a ``predictions.csv``; rows whose ``key`` is empty (a unit without
    that modality) are left out."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"unit_id", "label", key, *OUTPUTS.values()} - set(rows[0] if rows else ())
    if missing:
        found = sorted(rows[0]) if rows else "no rows"
        raise SystemExit(f"{path}: expected a predictions.csv (CV or radpath evaluate) with "
                         f"columns {sorted(missing)}; found {found} (files written before "
                         "the patient columns pair by unit_id only)")
    keyed: dict[str, dict[str, str]] = {}
    for row in (row for row in rows if row[key]):
        if row[key] in keyed:
            raise SystemExit(f"{path}: {key} {row[key]!r} is in units "
                             f"{keyed[row[key]]['unit_id']} and {row['unit_id']}: pair by a "
                             "key that names one unit")
        keyed[row[key]] = row
    return keyed


def read_ensemble(paths: str, key: str = "unit_id") -> dict[str, dict[str, str]]:
    """The rows of one ``predictions.csv``, or of several joined by commas averaged."""
    files = paths.split(",")
    runs = [read_predictions(Path(path), key) for path in files]
    if len(runs) == 1:
        return runs[0]
    units = set(runs[0]).intersection(*runs[1:])
    for path, run in zip(files, runs, strict=True):
        if set(run) != units:
            print(f"{path}: {len(set(run) - units)} units not in every run of the ensemble, "
                  "left out")
    labels = {u: {run[u]["label"] for run in runs} for u in units}
    if conflicting := sorted(u for u, seen in labels.items() if len(seen) > 1):
        raise SystemExit(f"{paths}: the runs disagree on the labels of {conflicting[:5]}")
    return {u: {**runs[0][u], **{column: _mean_probability([run[u][column] for run in runs])
                                 for column in OUTPUTS.values()}}
            for u in runs[0] if u in units}  # the first run's order, as its table's


def _mean_probability(probabilities: list[str]) -> str:
    """The sigmoid of the mean logit; empty where any run left the output empty."""
    if not all(probabilities):
        return ""
    return repr(float(mean_logit([np.array([float(p)]) for p in probabilities])[0]))


def auc_of(rows: dict[str, dict[str, str]], column: str, units: list[str],
           task: str = "malignancy") -> Estimate | None:
    """The AUC of ``column`` with its bootstrap interval on the labelled ``units`` that have
    it; None where they hold one class only."""
    scored = [u for u in units if rows[u][column] and int(rows[u]["label"]) >= 0]
    positive = TASKS[task](np.array([int(rows[u]["label"]) for u in scored])).astype(int)
    if len(set(positive)) < 2:
        return None
    return auc_with_ci(positive, np.array([float(rows[u][column]) for u in scored]))


def output_groups(rows: dict[str, dict[str, str]],
                  units: list[str]) -> list[tuple[str, str, list[str]]]:
    """(name, column, units) of each output over ``units``, then of the fused output over
    the units holding both modalities, which the CV tables also report."""
    both = [u for u in units if rows[u][OUTPUTS["histo"]] and rows[u][OUTPUTS["mammo"]]]
    return [*((name, column, units) for name, column in OUTPUTS.items()),
            (f"fused, {BOTH_MODALITIES}", OUTPUTS["fused"], both)]


def compare(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]], column: str,
            units: list[str], task: str = "malignancy") -> str:
    """One table line: AUCs of A and B on ``units`` scored by both, B - A, p."""
    # Labelled units that both runs scored, as radpath's AUCs read them.
    scored = [u for u in units if a[u][column] and b[u][column] and int(a[u]["label"]) >= 0]
    if not scored:
        return "no labelled unit scored by both"
    positive = TASKS[task](np.array([int(a[u]["label"]) for u in scored])).astype(int)
    if len(set(positive)) < 2:
        return f"{len(scored)} units, one class only: no AUC"
    scores_a = np.array([float(a[u][column]) for u in scored])
    scores_b = np.array([float(b[u][column]) for u in scored])
    b_minus_a = delong_test(positive, scores_b, scores_a)
    # radpath's bootstrap over the units in A's file order, which is the CV table's fold
    # order: one file's interval is then the table's (the bootstrap depends on the order).
    auc_a, auc_b = (auc_of(rows, column, scored, task) for rows in (a, b))
    return (f"{_with_ci(auc_a)}  {_with_ci(auc_b)}  {b_minus_a.difference:+.3f} "
            f"[{b_minus_a.ci_low:+.3f}, {b_minus_a.ci_high:+.3f}]  p {b_minus_a.p_value:.3f}"
            f"  (n={len(scored)})")


def _with_ci(estimate: Estimate) -> str:
    return f"{estimate.value:.3f} [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="predictions.csv of the reference run (several, "
                        "comma-joined: their mean logit)")
    parser.add_argument("b", help="predictions.csv of the run compared with it (the same)")
    parser.add_argument("--task", choices=tuple(TASKS), default="malignancy",
                        help="malignant against the rest, or any finding against normal")
    parser.add_argument("--key", choices=KEYS, default="unit_id",
                        help="pair rows by unit, or by the patients of one modality")
    args = parser.parse_args()
    a, b = read_ensemble(args.a, args.key), read_ensemble(args.b, args.key)
    units = [u for u in a if u in b]  # A's order
    if len(units) < len(set(a) | set(b)):
        print(f"scoring the {len(units)} units both runs predicted "
              f"({len(set(a) - set(b))} only in A, {len(set(b) - set(a))} only in B)")
    print(f"A: {args.a}\nB: {args.b}\n{'output':<28} {'AUC A [95% CI]':<22} {'AUC B [95% CI]':<22} "
          "B - A [95% CI]  DeLong p")
    for name, column, among in output_groups(a, units):
        print(f"{name:<28} {compare(a, b, column, among, args.task)}")


if __name__ == "__main__":
    main()
