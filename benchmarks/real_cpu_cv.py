"""configs/real-cpu.yaml under patient-grouped k-fold cross-validation on ../shared/data.

    .venv/bin/python benchmarks/real_cpu_cv.py --work /tmp/radpath-cv [--folds 3]
        [--algorithms erm] [--modality mammo|histo] [--group patient|batch]
        [--val-fraction 0.15] [--seeds 0,1,2] [--set key=value ...] [--table PATH]

One validation split of 34 MIAS patients and 17 H&E units gives AUCs whose 95% intervals
span 0.4, and which cases fall in it moves the figure more than most changes to the recipe.
Cross-validation tests every unit once (each fold trains on the others, with an inner
validation split it never reports on) and scores the pooled out-of-fold predictions: the
AUC then rests on all 97 MIAS patients and 49 H&E units. Predictions use each fold's last
epoch (an inner validation split of ten units would pick a near-random best epoch).
Table: benchmarks/results/real_cpu_cv.md. ``--modality`` keeps one modality's sources (no
pairs): a recipe change for that modality is then measured in a third of the time, and
without the other modality's gradients in the shared backbone
(benchmarks/results/real_cpu_cv_<modality>.md). ``--group batch`` (with ``--modality histo``)
holds out one H&E staining batch at a time instead (7 UCSB scan dates, BreakHis), every
unit still tested once: whether the recipe holds on staining it never saw
(benchmarks/results/real_cpu_cv_histo_batch.md). ``--seeds`` repeats the whole
cross-validation per seed (folds and training both change) and adds the mean ± sd of each
pooled AUC over the seeds (on 49 H&E units one seed's figure moves by about 0.05) and the
AUC of the seeds' ensemble, each unit scored by its mean out-of-fold logit.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from radpath.atomic import atomic_path
from radpath.data.manifest import Manifest
from radpath.engine.config import load_config
from radpath.evaluation.crossval import CHECKPOINT_CHOICES, VAL_FRACTION, run_cv
from radpath.evaluation.crossval_tables import modality_group_label
from radpath.evaluation.evaluate import SUMMARY_GROUPS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_cv import auc_of, output_groups, read_ensemble
from real_data import (
    FOLD_GROUPS,
    MODALITY_SOURCES,
    REPO,
    RESULTS,
    add_group_option,
    check_group,
    real_manifest,
    seed_list,
    spread_cells,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-cv"))
    parser.add_argument("--folds", type=int, default=3, help="folds of patient-grouped CV")
    parser.add_argument("--algorithms", default="erm")
    parser.add_argument("--modality", choices=tuple(MODALITY_SOURCES), default="both")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION,
                        help="share of each fold's training units held out as its inner "
                             "validation split (only reported on: predictions use "
                             "--checkpoint; the baselines train on all of them), drawn in "
                             "proportion across the strata")
    parser.add_argument("--checkpoint", choices=CHECKPOINT_CHOICES, default="last",
                        help="the weights each fold predicts with: the last epoch's, or the "
                             "mean logit of the snapshots of optim.cycles")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="comma-separated seeds, one cross-validation each (folds and "
                             "training), summarised as mean ± sd; default: the config's")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "real-cpu.yaml",
                        help="the recipe cross-validated (e.g. configs/real-cpu-pretrained.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    add_group_option(parser)
    parser.add_argument("--table", type=Path, default=None,
                        help="where the table goes (default: benchmarks/results/"
                             "real_cpu_cv[_MODALITY].md); set it for experiments")
    args = parser.parse_args()
    group_suffix = check_group(parser, args.group, (args.modality,))
    both = args.modality == "both"
    suffix = ("" if both else f"_{args.modality}") + group_suffix
    pairing = ("pseudo-pairs are label-matched units of different patients." if both
               else "one modality only, so no pairs.")
    started = time.perf_counter()
    manifest = real_manifest(args.work, MODALITY_SOURCES[args.modality])
    sections, pooled = [], {}
    for seed in args.seeds or [None]:
        used_seed, rows, summary = _cross_validate(args, manifest, seed,
                                                   args.work / f"cv{suffix}")
        pooled[used_seed] = _pooled_aucs(rows)
        heading = [f"## seed {used_seed}", ""] if args.seeds else []
        sections += [*heading, summary]
    minutes = (time.perf_counter() - started) / 60
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    table = "\n".join([
        "# real-cpu under cross-validation", "",
        f"Made by `{command}` in {minutes:.0f} min on {torch.get_num_threads()} CPU threads: "
        f"{_shown(args.config)}{''.join(' ' + o for o in args.overrides)}. AUC of malignancy "
        "(malignant vs rest) per unit, out-of-fold predictions pooled over the folds, 95% "
        f"bootstrap CIs; {pairing}", "", *_over_seeds(pooled),
        *_seed_ensemble(args.work / f"cv{suffix}", list(pooled), args.algorithms.split(",")),
        *sections])
    path = args.table or RESULTS / f"real_cpu_cv{suffix}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(table)
    print(table)


def _cross_validate(args: argparse.Namespace, manifest: Manifest, seed: int | None,
                    out: Path) -> tuple[int, list[dict], str]:
    """One cross-validation of real-cpu with ``seed`` (None: the config's), in
    ``out/seed-SEED`` (``out`` itself for None): the seed, the metric rows, cv.md."""
    overrides = [*args.overrides, *([f"seed={seed}"] if seed is not None else [])]
    config = load_config(args.config,
                         [f"data.cache_dir={args.work / 'cache'}", "trainer.progress_bar=false",
                          *overrides])
    if seed is not None:
        out = out / f"seed-{seed}"
    rows = run_cv(config, manifest, out, k=args.folds,
                  algorithms=tuple(args.algorithms.split(",")), checkpoint=args.checkpoint,
                  val_fraction=args.val_fraction, group_of=FOLD_GROUPS[args.group])
    return config.seed, rows, (out / "cv.md").read_text()


def _shown(path: Path) -> str:
    path = path.absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _pooled_aucs(rows: list[dict]) -> dict[tuple[str, str], float]:
    """Pooled malignancy AUC over all domains, by (algorithm, modality), and on the units
    with both modalities where the cohort mixes them (modality "<m>, both modalities")."""
    pooled = {}
    for r in rows:
        if ((r.get("scope"), r.get("task"), r.get("metric")) == ("pooled", "malignancy", "auc")
                and r.get("domain") in SUMMARY_GROUPS):
            pooled[(r["algorithm"], modality_group_label(r["modality"], r["domain"]))] = r["value"]
    return pooled


def _over_seeds(pooled: dict[int, dict[tuple[str, str], float]]) -> list[str]:
    """Mean ± sd (numpy's, ddof 0) of each pooled AUC over the seeds; nothing for one seed."""
    if len(pooled) < 2:
        return []
    seeds = list(pooled)
    lines = [f"Over seeds {', '.join(map(str, seeds))}:", "",
             "| algorithm | modality | mean ± sd of the pooled AUC | per seed |",
             "|---|---|---|---|"]
    for key in pooled[seeds[0]]:
        values = [pooled[s].get(key, np.nan) for s in seeds]
        lines.append(f"| {key[0]} | {key[1]} | {spread_cells(values)} |")
    return [*lines, ""]


def _seed_ensemble(out: Path, seeds: list[int], algorithms: list[str]) -> list[str]:
    """The AUC of each unit's mean logit over the seeds' out-of-fold scores (as
    ``radpath evaluate`` scores several runs); nothing for one seed."""
    if len(seeds) < 2:
        return []
    lines = [f"The seeds' ensemble: each unit scored by the mean logit of its out-of-fold "
             f"scores over seeds {', '.join(map(str, seeds))} (each from a model that never "
             "saw it; `benchmarks/compare_cv.py` tests two such ensembles paired):", "",
             "| algorithm | modality | AUC of the mean logit [95% CI] |", "|---|---|---|"]
    for algorithm in algorithms:
        rows = read_ensemble(",".join(str(out / f"seed-{seed}" / algorithm / "predictions.csv")
                                      for seed in seeds))
        # The first seed's fold order, as in its table.
        for name, column, chosen in output_groups(rows, list(rows)):
            if (estimate := auc_of(rows, column, chosen)) is not None:
                lines.append(f"| {algorithm} | {name} | {estimate.value:.3f} "
                             f"[{estimate.ci_low:.3f}, {estimate.ci_high:.3f}] "
                             f"(n={estimate.n}) |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
