"""``radpath train``: train a model on one or more manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def train(
    manifest: Annotated[list[Path], typer.Option("--manifest", help="Manifest (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")],
    config: Annotated[Path | None, typer.Option(help="YAML config, e.g. configs/demo.yaml.")]
    = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.sub=value "
                                                                  "(repeatable).")] = None,
    devices: Annotated[str | None, typer.Option(help="Devices (overrides the config).")] = None,
    strategy: Annotated[str | None, typer.Option(help="e.g. ddp (overrides the config).")]
    = None,
    resume: Annotated[bool, typer.Option(help="Resume from RUN_DIR/checkpoints/last.ckpt.")]
    = False,
    workers: Annotated[int | None, typer.Option(help="Processes for preprocessing.")] = None,
) -> None:
    """Train the cross-modal model; writes config.yaml, run.json, checkpoints, TensorBoard."""
    from radpath.engine.config import load_config
    from radpath.engine.run import train as run_training

    overrides = list(set_ or [])
    if devices is not None:
        overrides.append(f"trainer.devices={devices}")
    if strategy is not None:
        overrides.append(f"trainer.strategy={strategy}")
    settings = load_config(config, overrides)
    result = run_training(settings, manifest, out, resume=resume, workers=workers)
    console.print(f"\n[bold]run finished[/bold] in {result.wall_seconds:.1f} s: {out}")
    for name, metric in result.val_metrics.items():
        console.print(f"  validation AUC {name:<6} {metric['value']:.3f} "
                      f"[{metric['ci_low']:.3f}, {metric['ci_high']:.3f}] (n={metric['n']})")


def register(app: typer.Typer) -> None:
    app.command()(train)
