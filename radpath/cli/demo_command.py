"""``radpath demo``: the whole system on the built-in synthetic cohort (see radpath.demo)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-out"),
    patients: Annotated[int, typer.Option(help="Synthetic patients.")] = 48,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
) -> None:
    """Run radpath end to end on the built-in synthetic cohort."""
    from radpath.demo import run_demo

    started = time.perf_counter()
    result = run_demo(out, patients=patients, seed=seed, workers=workers)
    console.print(f"\n[bold]radpath demo finished in {time.perf_counter() - started:.1f} s[/bold]")
    for name, path in result.items():
        console.print(f"  {name:<12} {path}")
    console.print(f"\nOpen {result['report']} in a browser. Serve the model and its viewer:\n"
                  f"  radpath serve --run {result['run']}   # then http://127.0.0.1:8000/")


def register(app: typer.Typer) -> None:
    app.command()(demo)
