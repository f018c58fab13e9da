"""Domain-shift results on the real data of ../shared/data and on the synthetic cohort.

    .venv/bin/python benchmarks/real_data.py --work /tmp/radpath-bench [--quick]

Steps: ingest MIAS, UCSB and BreakHis; pair by label (pseudo-pairs: no patient has both
modalities); then leave-one-domain-out for ``erm`` against ``paper``, each evaluated on the
unseen domain with no adaptation, ``tent`` and ``causal``. Held-out domains: the three MIAS
tissue densities, UCSB block ytma10 (one scan date), and BreakHis 400x. The same protocol
on the synthetic cohort: three sites with known intensity and stain shifts, plus a known
shortcut (a noisy imaging device that goes with malignancy in 95% of site-b's and 75% of
site-c's patients but in only 10% of site-a's: reversed there). Tables go to
``benchmarks/results/`` with the command that made them. Training is short (configs/
bench-cpu.yaml) so that the whole comparison fits on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

from radpath.data.ingest import ingest
from radpath.data.manifest import Manifest, Record, read_manifest
from radpath.data.pairing import pair_modalities
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from radpath.engine.config import load_config
from radpath.evaluation.protocols import run_lodo

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
REAL_SOURCES = ("mias", "ucsb", "breakhis")
MODALITY_SOURCES = {"both": REAL_SOURCES, "mammo": ("mias",), "histo": ("ucsb", "breakhis")}
REAL_HOLDOUT = ("fatty", "fatty-glandular", "dense-glandular", "ytma10_010704", "400x")
SYNTHETIC = SyntheticConfig(n_patients=120, mammo_size=256, tile_size=128, seed=7,
                            shortcut_agreement=(0.1, 0.95, 0.75), shortcut_noise=0.05)


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


def run(name: str, manifest: Manifest, work: Path, overrides: list[str],
        holdout: tuple[str, ...], adaptations: tuple[str, ...]) -> None:
    config = load_config(REPO / "configs" / "bench-cpu.yaml",
                         [f"data.cache_dir={work / 'cache'}", *overrides])
    started = time.perf_counter()
    run_lodo(config, manifest, work / name, algorithms=("erm", "paper"),
             adaptations=adaptations, holdout=holdout)
    minutes = (time.perf_counter() - started) / 60
    table = (work / name / "lodo.md").read_text()
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    header = (f"# {name}: leave-one-domain-out, erm vs paper\n\nMade by `{command}` in "
              f"{minutes:.0f} min on {torch.get_num_threads()} CPU threads, "
              f"configs/bench-cpu.yaml{''.join(' ' + o for o in overrides)}.\n"
              "AUC of malignancy (malignant vs rest) per unit with 95% bootstrap CIs; "
              "pairing: pseudo-pairs (label-matched, different patients).\n\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(header + table)
    (RESULTS / f"{name}.json").write_text((work / name / "lodo.json").read_text())
    print(header + table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-bench"))
    parser.add_argument("--quick", action="store_true", help="fewer epochs, no causal")
    parser.add_argument("--only", choices=("real", "synthetic"), default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="config override key=value (repeatable)")
    args = parser.parse_args()
    overrides = (["optim.epochs=3"] if args.quick else []) + args.overrides
    adaptations = ("none", "tent") if args.quick else ("none", "tent", "causal")
    if args.only != "real":
        cohort = make_synthetic_cohort(args.work / "synthetic-cohort", SYNTHETIC)
        run("synthetic_lodo", read_manifest(cohort), args.work, overrides,
            ("site-a", "site-b", "site-c"), adaptations)
    if args.only != "synthetic":
        run("real_lodo", real_manifest(args.work), args.work, overrides, REAL_HOLDOUT,
            adaptations)


if __name__ == "__main__":
    main()
