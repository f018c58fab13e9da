"""Does averaging over the 8 flips and quarter turns of every H&E tile change the AUC?

    .venv/bin/python benchmarks/tile_symmetries.py CV_DIR [--checkpoint last]

H&E has no orientation, and training already flips and turns every tile (``data.flip``),
so a model should score a tile alike in all 8 orientations. Test-time augmentation (TTA)
over that group is the usual way to spend prediction time on a few more points of AUC.
Given the folder of a cross-validation (``benchmarks/real_cpu_cv.py``'s ``WORK/cv_histo``
or ``WORK/cv``: ``fold-*/erm`` runs with their ``fold-*/manifest.csv``), this predicts
every fold's held-out units twice with the same weights, once as they come and once with
each modality's logits averaged over the 8 orientations of the tiles, and prints both
pooled H&E AUCs with their 95% intervals and DeLong's test of the difference (the same
units, so the test is paired).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from radpath.algorithms.base import Algorithm, Batch
from radpath.batch.dataset import PatientBagDataset
from radpath.data.manifest import read_manifest
from radpath.engine.checkpoint import load_run
from radpath.evaluation.predict import (
    MODALITY_OUTPUTS,
    UnitPredictions,
    concat_predictions,
    predict_dataset,
)
from radpath.stats.delong import delong_test
from radpath.stats.metrics import auc_with_ci


def orientations(tiles: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips and quarter turns of tiles ``(..., h, w)``, the identity first."""
    turns = [torch.rot90(tiles, k, dims=(-2, -1)) for k in range(4)]
    return turns + [turn.flip(-1) for turn in turns]


def averaged_over_orientations(algorithm: Algorithm):
    """A predictor whose probabilities are the sigmoid of the mean logit over the 8."""
    @torch.no_grad()
    def predict(batch: Batch) -> dict[str, torch.Tensor]:
        algorithm.eval()
        logits = [algorithm({**batch, "histo": tiles})
                  for tiles in orientations(batch["histo"])]
        return {f"{m}_prob": torch.sigmoid(torch.stack([out[f"{m}_logit"] for out in logits])
                                           .mean(dim=0)) for m in MODALITY_OUTPUTS}
    return predict


def predict_folds(cv_dir: Path, checkpoint: str
                  ) -> tuple[UnitPredictions, UnitPredictions]:
    plain, averaged = [], []
    folds = sorted(cv_dir.glob("fold-*"))
    if not folds:
        sys.exit(f"{cv_dir}: no fold-* folders; give the cv_histo or cv folder of a "
                 f"benchmarks/real_cpu_cv.py run")
    for fold in folds:
        run = load_run(fold / "erm", which=checkpoint)
        dataset = PatientBagDataset(read_manifest(fold / "manifest.csv"), run.config.data,
                                    split="test", domains=run.record.get("domains", []))
        plain.append(predict_dataset(run.algorithm, dataset))
        averaged.append(predict_dataset(run.algorithm, dataset,
                                        predictor=averaged_over_orientations(run.algorithm)))
    return concat_predictions(plain), concat_predictions(averaged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cv_dir", type=Path, help="a cross-validation's folder of folds")
    parser.add_argument("--checkpoint", default="last", choices=("last", "best"))
    args = parser.parse_args()
    plain, averaged = predict_folds(args.cv_dir, args.checkpoint)
    has = plain.has["histo"]
    malignant = (plain.label[has] == 2).astype(int)
    if not has.any():
        sys.exit(f"{args.cv_dir}: no H&E units among the held-out predictions")
    scores = {"as they come": plain.prob["histo"][has],
              "mean over 8 orientations": averaged.prob["histo"][has]}
    print(f"H&E malignancy AUC over {int(has.sum())} held-out units "
          f"(pooled out-of-fold, {args.checkpoint} checkpoints)")
    for name, score in scores.items():
        print(f"  {name:26s} {auc_with_ci(malignant, score)}")
    test = delong_test(malignant, *reversed(list(scores.values())))
    print(f"  difference {test.difference:+.3f} [{test.ci_low:+.3f}, {test.ci_high:+.3f}], "
          f"DeLong p {test.p_value:.3f}; largest change of a unit's probability "
          f"{np.abs(np.subtract(*scores.values())).max():.3f}")


if __name__ == "__main__":
    main()
