"""Can the model fit its own training units? A plain loop, to tell underfitting from
overfitting.

    .venv/bin/python benchmarks/fit_check.py --manifest FOLD/manifest.csv
        [--modality mammo|histo] [--epochs 30] [--every 10] [--cache DIR]
        [--config configs/real-cpu.yaml] [--set key=value ...]

Trains the config's model with its algorithm's loss on one modality's ``train`` units of
the manifest (a fold manifest of ``benchmarks/real_cpu_cv.py``, say), and every ``--every``
epochs prints the malignancy AUC on those same units, read with evaluation transforms.
Deliberately bare: AdamW at the config's learning rate and weight decay, shuffled batches
of the config's size, no balanced sampler, pretraining, warm-up or schedule, so that what
it shows is whether the data, the model and the augmentation (switched with ``--set``,
e.g. ``data.augment=false`` or ``'data.mammo_gamma=[1.0,1.0]'``) allow a fit at all.
A full run's own fit is ``radpath evaluate --checkpoint last --split train``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from radpath.batch.collate import collate_patients
from radpath.batch.dataset import PatientBagDataset
from radpath.data.manifest import Manifest, read_manifest
from radpath.engine.config import load_config
from radpath.engine.run import build_algorithm
from radpath.evaluation.predict import predict_dataset

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--modality", choices=("mammo", "histo"), default="mammo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=None,
                        help="data.cache_dir (default: the config's)")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "real-cpu.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cache = [f"data.cache_dir={args.cache}"] if args.cache else []
    config = load_config(args.config, [*cache, *args.overrides])
    full = read_manifest(args.manifest)
    manifest = Manifest([r for r in full if r.modality == args.modality], source=full.source)
    training = PatientBagDataset(manifest, config.data, split="train", train=True,
                                 seed=config.seed)
    reading = PatientBagDataset(manifest, config.data, split="train", train=False,
                                seed=config.seed, domains=training.domains)
    torch.manual_seed(config.seed)
    algorithm = build_algorithm(config, training.domains, training.num_grades)
    optimizer = algorithm.make_optimizer(config.optim.lr, config.optim.weight_decay)
    order = torch.Generator().manual_seed(config.seed)
    print(f"{len(training)} training units of {args.manifest} ({args.modality}); "
          f"overrides: {' '.join(args.overrides) or 'none'}")
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        losses = _train_epoch(algorithm, optimizer, training, epoch, config.data.batch_size,
                              order, f"{args.modality}_bce")
        if epoch % args.every == 0 or epoch == args.epochs:
            auc, spread = _fit(algorithm, reading, args.modality)
            print(f"epoch {epoch}: {args.modality}_bce {np.mean(losses):.3f}, training AUC "
                  f"{auc:.3f}, sd of the probabilities {spread:.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)


def _train_epoch(algorithm, optimizer, dataset: PatientBagDataset, epoch: int,
                 batch_size: int, order: torch.Generator, term: str) -> list[float]:
    dataset.set_epoch(epoch)
    algorithm.train()
    losses = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=order,
                            collate_fn=collate_patients):
        loss, logs = algorithm.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(logs[term]))
    return losses


def _fit(algorithm, dataset: PatientBagDataset, modality: str) -> tuple[float, float]:
    """Malignancy AUC of the units' own predictions, and the spread of those predictions."""
    predicted = predict_dataset(algorithm, dataset)
    p = predicted.prob[modality]
    return float(roc_auc_score(predicted.label == 2, p)), float(p.std())


if __name__ == "__main__":
    main()
