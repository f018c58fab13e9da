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
    patients: Annotated[int | None, typer.Option(
        help="Synthetic patients (default: the demo's cohort, as configs/demo.yaml says).")] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    threads: Annotated[int, typer.Option(
        help="torch CPU threads; 0 for torch's default (one per core).")] = 1,
) -> None:
    """Run radpath end to end on the built-in synthetic cohort."""
    from radpath.cli.hints import radpath_command, shown_path
    from radpath.demo import run_demo

    started = time.perf_counter()
    result = run_demo(out, patients=patients, seed=seed, workers=workers,
                      threads=threads or None)

    console.print("\n" + result["summary"].read_text(encoding="utf-8"), highlight=False,
                  markup=False, soft_wrap=True)
    console.print(f"\n[bold]radpath demo finished in {time.perf_counter() - started:.1f} s[/bold]")
    for name, path in result.items():
        console.print(f"  {name:<12} {shown_path(path)}", soft_wrap=True, highlight=False)
    # soft_wrap: a command hint must print whole, to be copied, however narrow the terminal.
    console.print(f"\nOpen {shown_path(result['report'])} in a browser. Serve the model and "
                  f"its viewer, then open http://127.0.0.1:8000/ :", soft_wrap=True)
    console.print(f"  {radpath_command()} serve --run {shown_path(result['run'])}",
                  soft_wrap=True, highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(demo)
