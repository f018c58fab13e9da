"""``radpath explain``: maps, suspicious regions and linked histology for one case."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)


def explain(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by radpath train "
                                                    "(with --slide: a slide model folder).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for explanation.json, "
                                                    "figure.png and overlays.")],
    mammo: Annotated[list[Path] | None, typer.Option("--mammo", help="Mammogram file "
                                                     "(repeatable): DICOM, PGM, PNG, TIFF.")]
    = None,
    histo: Annotated[list[Path] | None, typer.Option("--histo", help="H&E image "
                                                                     "(repeatable).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Regions to report.")] = 3,
    map_kind: Annotated[str, typer.Option("--map", help="localisation, rollout, gradcam "
                                                        "or mil.")] = "localisation",
    pairing: Annotated[str, typer.Option(help="true (same patient) or pseudo (histology "
                                              "from another patient).")] = "true",
    tiles_per_region: Annotated[int, typer.Option("--tiles-per-region", min=0,
                                                  help="Tiles linked per region.")] = 3,
    slide: Annotated[Path | None, typer.Option("--slide", help="A whole slide to explain "
                                               "instead (needs --coords).")] = None,
    coords: Annotated[Path | None, typer.Option("--coords", help="Its coords .h5 from "
                                                "radpath tiles.")] = None,
) -> None:
    """Explain one case: heatmap, numbered regions, linked H&E tiles and a rationale.

    With --slide: the slide's MIL attention and localisation heatmaps (radpath.explain.slide).
    """
    if slide is not None:
        from radpath.cli.slides_command import explain_slide_command

        explain_slide_command(run, slide, coords, out, top_k)
        return
    if not mammo:
        raise typer.BadParameter("give at least one --mammo (or --slide)", param_hint="--mammo")
    from radpath.engine.checkpoint import load_run
    from radpath.explain.case import MAP_KINDS, explain_case, write_explanation

    if map_kind not in MAP_KINDS:
        raise typer.BadParameter(f"must be one of {', '.join(MAP_KINDS)}", param_hint="--map")
    if pairing not in ("true", "pseudo"):
        raise typer.BadParameter("must be true or pseudo", param_hint="--pairing")
    explanation = explain_case(load_run(run), mammo, histo or (), top_k=top_k,
                               tiles_per_region=tiles_per_region, map_kind=map_kind,
                               pairing=pairing)
    written = write_explanation(explanation, out)
    console.print(explanation.rationale, highlight=False, soft_wrap=True)
    console.print(f"written: {written['explanation']}, {written['figure']}")


def register(app: typer.Typer) -> None:
    app.command()(explain)
