"""Domain-shift results on the real data of ../shared/data.

    .venv/bin/python benchmarks/real_data.py --work /tmp/radpath-bench [--quick]
        [--seeds 0,1,2] [--set key=value ...] [--results DIR]

Steps: ingest MIAS, UCSB and BreakHis; pair by label (pseudo-pairs: no patient has both
modalities); then leave-one-domain-out for ``erm`` against ``paper``, each evaluated on the
unseen domain with no adaptation, ``tent`` and ``causal``. Held-out domains: the three MIAS
tissue densities, UCSB block ytma10 (one scan date), and BreakHis 400x. (The same protocol
on the synthetic cohort, where the answer is known: benchmarks/synthetic_lodo.py.) Tables go to
``benchmarks/results/`` (``--results`` elsewhere) with the command that made them;
``--seeds`` repeats the comparison per seed (the held-out domains stay; the seed moves
the training, the pseudo-pairs and the in-domain validation split) and adds the mean ± sd
of each summary figure. Training is short (configs/
bench-cpu.yaml) so that the whole comparison fits on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from radpath.atomic import atomic_path
from radpath.data.ingest import ingest
from radpath.data.manifest import Manifest, Record
from radpath.data.pairing import pair_modalities
from radpath.engine.config import load_config
from radpath.evaluation.protocols import run_lodo, summary_of, without_nan

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
REAL_SOURCES = ("mias", "ucsb", "breakhis")
MODALITY_SOURCES = {"both": REAL_SOURCES, "mammo": ("mias",), "histo": ("ucsb", "breakhis")}
REAL_HOLDOUT = ("fatty", "fatty-glandular", "dense-glandular", "ytma10_010704", "400x")


def staining_batch(record: Record) -> str:
    """The H&E staining batch of a record: a UCSB image's scan date (its domain); BreakHis is
    one batch (one laboratory; its domains are magnifications of the same patients)."""
    return record.source if record.source == "breakhis" else record.domain


# How the cross-validation benchmarks fold: by patient (k folds), or one H&E staining batch
# held out at a time (H&E only).
FOLD_GROUPS = {"patient": None, "batch": staining_batch}


def add_group_option(parser: argparse.ArgumentParser) -> None:
    """The ``--group patient|batch`` option of the cross-validation benchmarks."""
    parser.add_argument("--group", choices=tuple(FOLD_GROUPS), default="patient",
                        help="patient-grouped folds, or one H&E staining batch held out at a "
                             "time (H&E only)")


def check_group(parser: argparse.ArgumentParser, group: str, modalities: tuple[str, ...]
                ) -> str:
    """Refuse ``--group batch`` unless only H&E is used; the result files' suffix."""
    if group == "batch" and tuple(modalities) != ("histo",):
        parser.error("--group batch holds out H&E staining batches: use it with histo only")
    return "_batch" if group == "batch" else ""


def real_manifest(work: Path, sources: tuple[str, ...] = REAL_SOURCES) -> Manifest:
    """The ``sources`` (default: MIAS, UCSB and BreakHis), ingested from ../shared/data and
    pseudo-paired (with one modality only, every record stays unpaired)."""
    records = []
    for source in sources:
        if not (SHARED / source).is_dir():
            sys.exit(f"{SHARED / source} is absent: the real-data benchmark needs ../shared/data")
        report = ingest(source, SHARED / source, work / "ingest" / source / "manifest.csv")
        records += report.records
    return pair_modalities(Manifest(records), seed=0)


def run(name: str, manifest: Manifest, args: argparse.Namespace, holdout: tuple[str, ...],
        adaptations: tuple[str, ...]) -> None:
    """Leave-one-domain-out of ``erm`` and ``paper`` once per seed; ``NAME.md`` (a table per
    seed, and the mean ± sd over seeds when there are several) and ``NAME.json`` (every row,
    with its seed) in ``args.results``."""
    started = time.perf_counter()
    sections, rows, summaries = [], [], {}
    for seed in args.seeds or [None]:
        overrides = [f"data.cache_dir={args.work / 'cache'}", *args.overrides,
                     *([f"seed={seed}"] if seed is not None else [])]
        config = load_config(REPO / "configs" / "bench-cpu.yaml", overrides)
        out = args.work / name / (f"seed-{seed}" if seed is not None else "")
        seed_rows = run_lodo(config, manifest, out, algorithms=("erm", "paper"),
                             adaptations=adaptations, holdout=holdout)
        summaries[config.seed] = summary_of(seed_rows)
        rows += [{"seed": config.seed, **row} for row in without_nan(seed_rows)]
        heading = [f"## seed {config.seed}", ""] if args.seeds else []
        sections += [*heading, (out / "lodo.md").read_text()]
    minutes = (time.perf_counter() - started) / 60
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    header = (f"# {name}: leave-one-domain-out, erm vs paper\n\nMade by `{command}` in "
              f"{minutes:.0f} min on {torch.get_num_threads()} CPU threads, "
              f"configs/bench-cpu.yaml{''.join(' ' + o for o in args.overrides)}.\n"
              "AUC of malignancy (malignant vs rest) per unit with 95% bootstrap CIs; "
              "pairing: pseudo-pairs (label-matched, different patients).\n\n")
    table = header + "\n".join([*over_seeds(summaries), *sections])
    args.results.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.results / f"{name}.md") as tmp:
        tmp.write_text(table)
    with atomic_path(args.results / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
    print(table)


def over_seeds(summaries: dict[int, dict[tuple[str, str], tuple[float, float, int]]]
               ) -> list[str]:
    """Mean ± sd (numpy's, ddof 0) over the seeds of each (algorithm, adaptation)'s mean
    unseen AUC and mean gap; nothing for one seed. On ~30-unit domains one training seed
    can reverse a comparison, so several seeds are what a claim should rest on."""
    if len(summaries) < 2:
        return []
    seeds = list(summaries)
    lines = [f"Over seeds {', '.join(map(str, seeds))}:", "",
             "| algorithm | adaptation | mean unseen AUC, mean ± sd | per seed | "
             "mean gap, mean ± sd | per seed |", "|---|---|---|---|---|---|"]
    for key in summaries[seeds[0]]:
        unseen = [summaries[s].get(key, (np.nan,) * 3)[0] for s in seeds]
        gap = [summaries[s].get(key, (np.nan,) * 3)[1] for s in seeds]
        lines.append(f"| {key[0]} | {key[1]} | {spread_cells(unseen)} | {spread_cells(gap)} |")
    return [*lines, ""]


def spread_cells(values: Sequence[float]) -> str:
    """Two table cells: ``mean ± sd`` (numpy's sd, ddof 0) and the values themselves."""
    array = np.asarray(values, dtype=float)
    return (f"{array.mean():.3f} ± {array.std():.3f} | "
            f"{', '.join(f'{v:.3f}' for v in array)}")


def seed_list(text: str) -> list[int]:
    """``--seeds 0,1,2`` of the benchmarks: comma-separated integers."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-bench"))
    parser.add_argument("--quick", action="store_true", help="fewer epochs, no causal")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override key=value (repeatable)")
    parser.add_argument("--seeds", type=seed_list, default=None,
                        help="comma-separated training seeds, one leave-one-domain-out each, "
                             "summarised as mean ± sd; default: the config's")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="folder for the tables (default: benchmarks/results); set it "
                             "for experiments")
    args = parser.parse_args()
    args.overrides = (["optim.epochs=3"] if args.quick else []) + args.overrides
    adaptations = ("none", "tent") if args.quick else ("none", "tent", "causal")
    run("real_lodo", real_manifest(args.work), args, REAL_HOLDOUT, adaptations)


if __name__ == "__main__":
    main()
