"""configs/real-cpu.yaml under patient-grouped k-fold cross-validation on ../shared/data.

    .venv/bin/python benchmarks/real_cpu_cv.py --work /tmp/radpath-cv [--folds 3]
        [--algorithms erm] [--modality mammo|histo] [--group patient|batch]
        [--val-fraction 0.15] [--set key=value ...] [--table PATH]

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
(benchmarks/results/real_cpu_cv_histo_batch.md).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from radpath.engine.config import load_config
from radpath.evaluation.crossval import run_cv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import (
    FOLD_GROUPS,
    MODALITY_SOURCES,
    REPO,
    RESULTS,
    add_group_option,
    check_group,
    real_manifest,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-cv"))
    parser.add_argument("--folds", type=int, default=3, help="folds of patient-grouped CV")
    parser.add_argument("--algorithms", default="erm")
    parser.add_argument("--modality", choices=tuple(MODALITY_SOURCES), default="both")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of each fold's training units held out as its inner "
                             "validation split (only reported on: predictions use the last "
                             "epoch; the baselines train on all of them), drawn in "
                             "proportion across the strata")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    add_group_option(parser)
    parser.add_argument("--table", type=Path, default=None,
                        help="where the table goes (default: benchmarks/results/"
                             "real_cpu_cv[_MODALITY].md); set it for experiments")
    args = parser.parse_args()
    group_suffix = check_group(parser, args.group, (args.modality,))
    config = load_config(REPO / "configs" / "real-cpu.yaml",
                         [f"data.cache_dir={args.work / 'cache'}", "trainer.progress_bar=false",
                          *args.overrides])
    both = args.modality == "both"
    suffix = ("" if both else f"_{args.modality}") + group_suffix
    pairing = ("pseudo-pairs are label-matched units of different patients." if both
               else "one modality only, so no pairs.")
    started = time.perf_counter()
    out = args.work / f"cv{suffix}"
    run_cv(config, real_manifest(args.work, MODALITY_SOURCES[args.modality]), out, k=args.folds,
           algorithms=tuple(args.algorithms.split(",")), checkpoint="last",
           val_fraction=args.val_fraction,
           group_of=FOLD_GROUPS[args.group])
    minutes = (time.perf_counter() - started) / 60
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    table = "\n".join([
        "# real-cpu under cross-validation", "",
        f"Made by `{command}` in {minutes:.0f} min on {torch.get_num_threads()} CPU threads: "
        f"configs/real-cpu.yaml{''.join(' ' + o for o in args.overrides)}. AUC of malignancy "
        "(malignant vs rest) per unit, out-of-fold predictions pooled over the folds, 95% "
        f"bootstrap CIs; {pairing}", "",
        (out / "cv.md").read_text()])
    path = args.table or RESULTS / f"real_cpu_cv{suffix}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    print(table)


if __name__ == "__main__":
    main()
