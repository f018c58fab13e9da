"""How much of a model's H&E score is the tissue share of the image.

    .venv/bin/python benchmarks/tissue_agreement.py PREDICTIONS.csv [--work /tmp/radpath-cv]

On the H&E units of ../shared/data the share of the image that is tissue, with nothing
learnt, scores a malignancy AUC of 0.82: malignant cores and fields are denser. A model
that scores about as well may have learnt little else. Given the ``predictions.csv`` of an
H&E-only cross-validation (``benchmarks/real_cpu_cv.py --modality histo``; one row per
unit, out of fold), this prints the AUC of the model and of the tissue share on the same
units, their Spearman rank correlation, and the AUC of the mean of their two ranks (fixed
equal weights, nothing fitted): if the model knew something the tissue share does not,
the mean of the ranks would beat both. A joint run's ``predictions.csv`` works too: each
unit's H&E patients are in its ``histo_patients`` column (written since a1ee291).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr

from radpath.data.splits import unit_count
from radpath.evaluation.evaluate import TASKS
from radpath.evaluation.predict import PREDICTION_COLUMNS
from radpath.stats.metrics import auc_with_ci

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_baselines import tissue_share
from real_data import MODALITY_SOURCES, real_manifest


def histo_patients(row: dict[str, str]) -> list[str]:
    """The H&E patients of a predictions.csv row: its ``histo_patients``, or else (an
    H&E-only run written before that column) the unit itself."""
    return (row.get("histo_patients") or row["unit_id"]).split(";")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path,
                        help="predictions.csv of an H&E-only cross-validation")
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-cv"),
                        help="where the real data is ingested (as real_cpu_cv.py's --work)")
    args = parser.parse_args()
    column = PREDICTION_COLUMNS["histo"]
    manifest = real_manifest(args.work, MODALITY_SOURCES["histo"])
    images: dict[str, list] = {}
    for record in manifest:
        images.setdefault(record.patient_id, []).append(record)
    with args.predictions.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get(column)]
    patients = [histo_patients(row) for row in rows]
    missing = sorted({p for unit in patients for p in unit} - set(images))
    if missing:
        sys.exit(f"{args.predictions}: units {missing[:3]} are not H&E patients of "
                 f"../shared/data; give the predictions of a --modality histo run, or of a "
                 f"joint run with a histo_patients column")
    labels = TASKS["malignancy"](np.array([int(row["label"]) for row in rows])).astype(int)
    model = np.array([float(row[column]) for row in rows])
    share = np.array([np.mean([tissue_share(r) for p in unit for r in images[p]])
                      for unit in patients])
    ranks = rankdata(model) + rankdata(share)
    print(f"{len(rows)} units of {unit_count(manifest)} (pooled out-of-fold predictions)")
    print(f"model AUC            {auc_with_ci(labels, model)}")
    print(f"tissue share AUC     {auc_with_ci(labels, share)}")
    print(f"Spearman(model, share) {spearmanr(model, share).statistic:.3f}")
    print(f"mean of the two ranks  {auc_with_ci(labels, ranks)}")


if __name__ == "__main__":
    main()
