"""From scratch against pretrained backbones: the out-of-fold predictions of
``benchmarks/real_cpu_cv.py`` runs (same seed, hence the same folds) side by side.

    .venv/bin/python benchmarks/transfer_cv.py --modality histo \\
        --run "from scratch=/tmp/tl/scratch/cv_histo/erm/predictions.csv" \\
        --run "pretrained CNN=/tmp/tl/cnn/cv_histo/erm/predictions.csv" \\
        [--table benchmarks/results/transfer_cv_histo.md]

The first ``--run`` is the reference. Each row: the pooled out-of-fold AUC of the
modality's malignancy output with its 95% bootstrap CI, the AUC within each H&E source
(UCSB, BreakHis: their scores need not be aligned across sources, so the pooled AUC can
understate a model that ranks well within each), and the paired difference from the
reference with its 95% CI and DeLong's p on the units both scored. A run given as several
files joined by commas is their ensemble (mean logit), as in ``compare_cv.py``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

from radpath.atomic import atomic_path
from radpath.stats.delong import delong_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_cv import OUTPUTS, auc_of, read_ensemble

MALIGNANT = 2  # label code of a malignant unit


def named_run(text: str) -> tuple[str, str]:
    name, sep, paths = text.partition("=")
    if not sep or not name.strip() or not paths:
        raise argparse.ArgumentTypeError(f"expected NAME=predictions.csv[,...], got {text!r}")
    return name.strip(), paths


def source_of(row: dict[str, str], modality: str) -> str:
    """The dataset a unit's images come from: its patient ids' prefix (``ucsb-...``)."""
    patients = row.get(f"{modality}_patients") or row["unit_id"]
    return patients.split(";")[0].split("-")[0]


def cell(estimate: object) -> str:
    if estimate is None:
        return "one class"
    return f"{estimate.value:.3f} [{estimate.ci_low:.3f}, {estimate.ci_high:.3f}]"


def table(runs: list[tuple[str, str]], modality: str) -> list[str]:
    column = OUTPUTS[modality]
    rows = {name: read_ensemble(paths) for name, paths in runs}
    reference_name, reference = runs[0][0], rows[runs[0][0]]
    units = [u for u in reference if reference[u][column] and int(reference[u]["label"]) >= 0]
    sources = sorted({source_of(reference[u], modality) for u in units})
    lines = [f"| run | pooled AUC [95% CI] | {' | '.join(f'{s} AUC' for s in sources)} | "
             f"vs {reference_name}: difference [95% CI] | DeLong p |",
             "|---|---|" + "---|" * len(sources) + "---|---|"]
    for name, predictions in rows.items():
        shared = [u for u in units if u in predictions and predictions[u][column]]
        per_source = [cell(auc_of(predictions, column,
                                  [u for u in shared if source_of(reference[u], modality) == s]))
                      for s in sources]
        paired = "–  | –"
        if name != reference_name:
            positive = np.array([int(reference[u]["label"]) == MALIGNANT for u in shared])
            result = delong_test(positive.astype(int),
                                 np.array([float(predictions[u][column]) for u in shared]),
                                 np.array([float(reference[u][column]) for u in shared]))
            paired = (f"{result.difference:+.3f} [{result.ci_low:+.3f}, {result.ci_high:+.3f}]"
                      f" | {result.p_value:.3f}")
        lines.append(f"| {name} | {cell(auc_of(predictions, column, shared))} (n={len(shared)})"
                     f" | {' | '.join(per_source)} | {paired} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modality", choices=("histo", "mammo"), required=True)
    parser.add_argument("--run", dest="runs", type=named_run, action="append", required=True,
                        help="NAME=predictions.csv (several joined by commas: their "
                             "ensemble); the first is the reference")
    parser.add_argument("--title", default="From scratch against pretrained backbones")
    parser.add_argument("--note", action="append", default=[],
                        help="a line printed under the table (what each run was)")
    parser.add_argument("--table", type=Path, default=None)
    args = parser.parse_args()
    command = " ".join(shlex.quote(part) for part in [".venv/bin/python", *sys.argv])
    text = "\n".join([f"# {args.title}: {'H&E' if args.modality == 'histo' else 'MIAS'}", "",
                      f"Made by `{command}`. Malignancy AUC per unit, out-of-fold "
                      "predictions pooled over the folds of 3-fold CV by patient, 95% "
                      "bootstrap CIs; paired DeLong test on the same units.", "",
                      *table(args.runs, args.modality), "", *args.note, ""])
    print(text)
    if args.table:
        with atomic_path(args.table) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
