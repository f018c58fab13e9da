"""``radpath evaluate``: metrics with confidence intervals and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from radpath.engine.device_names import DEVICE_HELP

console = Console(stderr=True)

# The headline figure of each task; the rest (sensitivity, calibration, distances) is in
# metrics.json and the report.
HEADLINE_METRICS = {"auc": "AUC", "hit_rate": "hit rate", "quadratic_weighted_kappa": "QWK"}


def evaluate(
    run: Annotated[list[Path], typer.Option(
        "--run", help="Run folder written by radpath train; repeat it to score several "
                      "runs (seeds, say) as one ensemble, each unit by its mean logit.")],
    manifest: Annotated[list[Path], typer.Option("--manifest", help="Manifest (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json, "
                                                    "predictions.csv and report.html.")],
    adapt: Annotated[str, typer.Option(help="Test-time adaptation: none, tent, sar or "
                                            "causal.")] = "none",
    split: Annotated[str, typer.Option(help="Split to evaluate (all rows when the "
                                            "manifests have none).")] = "test",
    workers: Annotated[int | None, typer.Option(help="Processes for preprocessing.")] = None,
    checkpoint: Annotated[str, typer.Option(help="Checkpoint to evaluate: best (on the run's "
                                                 "validation split), last, or snapshots (the "
                                                 "end of each cosine cycle, optim.cycles, as "
                                                 "one ensemble).")] = "best",
    device: Annotated[str, typer.Option(help=f"Where to predict: {DEVICE_HELP}.")] = "auto",
) -> None:
    """Evaluate a run: AUC, sensitivity/specificity, calibration, localisation, with CIs."""
    from radpath.evaluation.protocols import format_estimate
    from radpath.evaluation.runner import evaluate_run

    result = evaluate_run(run, manifest, out, adapt=adapt, split=split, workers=workers,
                          checkpoint=checkpoint, device=device)
    table = Table(title=f"{result.metrics_path}", show_edge=False)
    for column in ("task", "modality", "domain", "metric", "value [95% CI] (n)"):
        table.add_column(column)
    for row in result.rows:
        if row["metric"] in HEADLINE_METRICS:
            table.add_row(row["task"], row["modality"], row["domain"],
                          HEADLINE_METRICS[row["metric"]], format_estimate(row))
    console.print(table)
    if result.ensemble:
        console.print(f"ensemble: {result.ensemble}")
    console.print(f"per-unit probabilities: {result.predictions_path}")
    console.print(f"report: {result.report_path}")


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
