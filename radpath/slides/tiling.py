"""``radpath tiles``: the patch grid of every slide of a catalogue, one CLAM file each."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from radpath.atomic import atomic_path
from radpath.data.sources import Skipped
from radpath.data.wsi import Slide
from radpath.errors import RadpathError
from radpath.parallel import parallel_map
from radpath.slides.catalog import read_slides
from radpath.slides.grid import GridConfig, make_grid, write_coords
from radpath.slides.shard import shard_indices


@dataclass(frozen=True)
class TiledSlide:
    image_id: str
    patches: int
    level: int
    read_size: int
    coords_path: str


def _tile_one(task: tuple[str, str, float | None, str, GridConfig]) -> TiledSlide | str:
    path, image_id, mpp, out_dir, config = task
    try:
        with Slide(path, mpp=mpp) as slide:
            grid = make_grid(slide, config)
        if len(grid.coords) == 0:
            return f"{path}: no patch has {config.min_tissue:.0%} tissue at {config.mpp} µm/px"
        target = write_coords(grid, Path(out_dir) / f"{image_id}.h5", name=image_id)
    except RadpathError as exc:
        return str(exc)
    except Exception as exc:  # one bad slide must not stop the batch
        return f"{path}: {type(exc).__name__}: {exc}"
    return TiledSlide(image_id, len(grid.coords), grid.level, grid.read_size, str(target))


def tile_slides(slides_csv: str | Path, out_dir: str | Path, config: GridConfig, *,
                workers: int | None = None, rank: int = 0, world_size: int = 1,
                progress: bool = True) -> tuple[list[TiledSlide], list[Skipped]]:
    """Write ``out_dir/<image_id>.h5`` for this rank's share of the slides of ``slides_csv``.

    Also writes ``tiles.csv`` (one row per slide done) and ``skipped.csv`` beside them; with
    several ranks each writes ``tiles.rank<r>.csv`` and ``skipped.rank<r>.csv``.
    """
    slides = read_slides(slides_csv)
    mine = shard_indices([1] * len(slides), rank, world_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(slides[i][0].path, slides[i][0].image_id, slides[i][1], str(out_dir), config)
             for i in mine]
    results = parallel_map(_tile_one, tasks, workers=workers, description="tiling slides",
                           progress=progress)
    done = [r for r in results if isinstance(r, TiledSlide)]
    skipped = [Skipped(t[0], r) for t, r in zip(tasks, results, strict=True)
               if isinstance(r, str)]
    suffix = "" if world_size == 1 else f".rank{rank}"
    _write_summary(done, out_dir / f"tiles{suffix}.csv")
    from radpath.data.ingest import write_skipped

    write_skipped(skipped, out_dir / f"skipped{suffix}.csv")
    return done, skipped


def _write_summary(done: list[TiledSlide], path: Path) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "patches", "patch_level", "patch_size", "coords"])
        writer.writerows([d.image_id, d.patches, d.level, d.read_size, d.coords_path]
                         for d in done)
