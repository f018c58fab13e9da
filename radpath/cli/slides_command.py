"""Slide commands: ``radpath ingest wsi`` (through ``ingest``) and ``radpath tiles``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def ingest_wsi(path: Path, out: Path, *, mpp: float | None, domain: str | None,
               workers: int | None) -> None:
    """``radpath ingest wsi DIR --out slides.csv``: one row per slide, bad slides skipped."""
    from radpath.slides.catalog import ingest_slides

    rows, skipped = ingest_slides(path, out, mpp=mpp, domain=domain, workers=workers)
    console.print(f"wrote {out}: {len(rows)} slide(s), {len(skipped)} skipped "
                  f"(see {out.with_name('skipped.csv')})")
    for row in rows:
        info = row.info
        console.print(f"  {row.record.image_id}: {info.width}x{info.height} px, {info.levels} "
                      f"levels, {info.mpp:g} µm/px ({info.mpp_source}), {info.backend}",
                      highlight=False)
    for item in skipped[:10]:
        console.print(f"  skipped {item.path}: {item.reason}", highlight=False)


def explain_slide_command(model: Path, slide: Path, coords: Path | None, out: Path,
                          top_k: int) -> None:
    """``radpath explain --run SLIDE_MODEL --slide S --coords C.h5 --out DIR``."""
    from radpath.explain.slide import explain_slide

    if coords is None:
        raise typer.BadParameter("--slide needs --coords (from radpath tiles)",
                                 param_hint="--coords")
    written = explain_slide(slide, coords, model, out, image_id=coords.stem, top_k=top_k)
    console.print("written: " + ", ".join(str(p) for p in written.values()), highlight=False)


def tiles(
    slides: Annotated[Path, typer.Argument(help="slides.csv from 'radpath ingest wsi'.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for coords/<image_id>.h5.")],
    mpp: Annotated[float, typer.Option(help="Target microns per pixel of a patch.")] = 0.5,
    size: Annotated[int, typer.Option(help="Patch side in target pixels.")] = 256,
    min_tissue: Annotated[float, typer.Option(help="Tissue fraction a patch needs.")] = 0.25,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    rank: Annotated[int | None, typer.Option(help="This rank (default: from the launcher's "
                                                  "environment).")] = None,
    world_size: Annotated[int | None, typer.Option(help="Number of ranks.")] = None,
) -> None:
    """Detect tissue and write each slide's patch grid in CLAM's coords layout."""
    from radpath.slides.grid import GridConfig
    from radpath.slides.shard import current_rank
    from radpath.slides.tiling import tile_slides

    env_rank, env_world = current_rank()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    config = GridConfig(mpp=mpp, size=size, min_tissue=min_tissue)
    done, skipped = tile_slides(slides, out, config, workers=workers, rank=rank,
                                world_size=world_size)
    patches = sum(d.patches for d in done)
    console.print(f"{len(done)} slide(s) tiled into {patches} patches of {size} px at {mpp} "
                  f"µm/px under {out}; {len(skipped)} skipped")
    for item in skipped[:10]:
        console.print(f"  skipped {item.path}: {item.reason}", highlight=False)
    if skipped and not done:
        raise typer.Exit(1)


def features(
    slides: Annotated[Path, typer.Argument(help="slides.csv, or a CAMELYON manifest.")],
    coords: Annotated[Path, typer.Option(help="Folder of coords/<image_id>.h5.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for features/<image_id>.h5.")],
    encoder: Annotated[str, typer.Option(help="colour-stats, or timm:<model name>.")]
    = "colour-stats",
    checkpoint: Annotated[Path | None, typer.Option(help="Local weights of a timm encoder "
                                                         "(safetensors or torch).")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    workers: Annotated[int, typer.Option(help="DataLoader workers per slide.")] = 0,
) -> None:
    """Encode every patch once with a frozen encoder; sharded by slide across DDP ranks."""
    from radpath.evaluation.slides import cache_manifest_features
    from radpath.slides.shard import current_rank

    rank, world_size = current_rank()
    written = cache_manifest_features(slides, coords, out, encoder=encoder,
                                      checkpoint=str(checkpoint) if checkpoint else None,
                                      rank=rank, world_size=world_size,
                                      batch_size=batch_size, workers=workers)
    console.print(f"rank {rank}/{world_size}: {len(written)} slide feature file(s) in {out}")


def train_slides(
    manifest: Annotated[Path, typer.Argument(help="Slide manifest (split=test rows are "
                                                  "held out and scored).")],
    coords: Annotated[Path, typer.Option(help="Folder of coords/<image_id>.h5.")],
    features_dir: Annotated[Path, typer.Option("--features", help="Folder of cached "
                                               "features.")],
    out: Annotated[Path, typer.Option("--out", help="Slide model folder to write.")],
    encoder: Annotated[str, typer.Option(help="The encoder the features came from.")]
    = "colour-stats",
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    grades: Annotated[int, typer.Option(help="Ordinal grades (5 for pN stage; 0: none).")]
    = 5,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train the slide MIL on patient bags of cached features; score the test patients."""
    import json

    from radpath.evaluation.slides import train_slides as run
    from radpath.models.slide_mil import SlideMILConfig

    config = SlideMILConfig(epochs=epochs, lr=lr, num_grades=grades, seed=seed)
    metrics = run(manifest, coords, features_dir, out, config, encoder=encoder)
    console.print(json.dumps(metrics, indent=2), highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(tiles)
    app.command()(features)
    app.command("train-slides")(train_slides)
