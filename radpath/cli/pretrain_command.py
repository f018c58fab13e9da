"""``radpath pretrain``: self-supervised pretraining of the backbone on unlabelled images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def pretrain(
    manifest: Annotated[list[Path], typer.Option("--manifest", help="Manifest (repeatable); "
                                                                    "labels are not needed.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    config: Annotated[Path | None, typer.Option(help="YAML config: its model, data and "
                                                     "pretrain settings are used.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override: key.sub=value "
                                                                  "(repeatable).")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split's records (e.g. train); "
                                                   "default: every record.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for preprocessing.")] = None,
) -> None:
    """Masked image modelling on the manifests' pixels; writes OUT/backbone.safetensors."""
    from radpath.engine.config import load_config
    from radpath.engine.pretrain import pretrain as run_pretraining

    settings = load_config(config, list(set_ or []))
    weights = run_pretraining(settings, manifest, out, split=split, workers=workers)
    console.print(f"\n[bold]pretrained backbone[/bold]: {weights}\n"
                  f"train with it: --set model.backbone.pretrained={weights}")


def register(app: typer.Typer) -> None:
    app.command()(pretrain)
