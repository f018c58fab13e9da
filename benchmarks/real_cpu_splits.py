"""configs/real-cpu.yaml on several patient splits of the real data of ../shared/data.

    .venv/bin/python benchmarks/real_cpu_splits.py --work /tmp/radpath-splits [--seeds 0,1,2]

One validation split of 34 MIAS patients and 17 H&E units gives AUCs whose 95% intervals
span 0.4; which cases fall in it moves the figure more than most changes to the recipe.
This trains the real-cpu recipe once per seed (the seed draws the patient split and the
initial weights) and reports each run's validation AUCs with their CIs and the mean and
standard deviation over runs. Table: benchmarks/results/real_cpu_splits.md.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
from pathlib import Path

from radpath.data.manifest import write_manifest
from radpath.engine.config import load_config
from radpath.engine.run import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import REPO, RESULTS, real_manifest

MODALITIES = ("mammo", "histo", "fused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-splits"))
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    cohort = write_manifest(real_manifest(args.work), args.work / "cohort.csv")
    rows, aucs = [], {m: [] for m in MODALITIES}
    for seed in seeds:
        config = load_config(REPO / "configs" / "real-cpu.yaml",
                             [f"seed={seed}", f"data.cache_dir={args.work / 'cache'}",
                              "trainer.progress_bar=false"])
        result = train(config, [cohort], args.work / f"seed-{seed}")
        cells = []
        for modality in MODALITIES:
            metric = result.val_metrics[modality]
            aucs[modality].append(metric["value"])
            cells.append(f"{metric['value']:.3f} [{metric['ci_low']:.3f}, "
                         f"{metric['ci_high']:.3f}] (n={metric['n']})")
        rows.append(f"| {seed} | {' | '.join(cells)} | {result.wall_seconds:.0f} |")
    summary = " | ".join(f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}"
                         for v in aucs.values())
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    table = "\n".join([
        "# real-cpu on several patient splits", "",
        f"Made by `{command}`: configs/real-cpu.yaml, one training per seed (the seed draws "
        "the split, stratified by modality, label and domain, and the initial weights). "
        "Validation AUC of malignancy (malignant vs rest) per unit, at the end of training, "
        "with 95% bootstrap CIs; pairing: pseudo-pairs (label-matched, different patients).",
        "", "| seed | mammo | histo | fused | wall s |", "|---|---|---|---|---|", *rows,
        f"| mean ± sd | {summary} | |", ""])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "real_cpu_splits.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
