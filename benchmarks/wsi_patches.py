"""Whole-slide patch reading: patches/s against OpenSlide's raw read_region, and peak memory.

1. Throughput on two slides: the real DICOM WSI of ../shared/data (when present) and a
   synthetic 100k x 100k tiled slide. For each, the same tissue patches are read (a) by
   OpenSlide's ``read_region`` alone (RGBA PIL image, nothing else) and (b) by radpath's
   pipeline (``SlidePatchDataset``: RGB array, colour repair, float tensor), both in
   ``--workers`` processes sharing the patch list. Goal: radpath within 2x of raw.
2. Peak memory on the synthetic slide: one process opens it, detects tissue, lays the
   grid, writes the CLAM coords file and reads patches; its resident memory (VmRSS, and
   VmHWM, the peak) is sampled after each step. Goal: flat, under 1 GB.

    nice -n 10 .venv/bin/python benchmarks/wsi_patches.py [--patches 2000] [--workers 2]

Writes benchmarks/results/wsi_patches.md and .json. The synthetic slide (about 0.2 GB on
disk) is written to a temporary folder and removed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from radpath.data.wsi import Slide
from radpath.slides.grid import GridConfig, make_grid, write_coords
from radpath.slides.patches import SlidePatchDataset
from radpath.slides.synthetic import write_procedural_tiff

ROOT = Path(__file__).resolve().parents[1]
REAL_SLIDE = ROOT.parent / "shared" / "data" / "wsi" / "cmu-1-small-region"
RESULTS = ROOT / "benchmarks" / "results"
SIDE = 100_000
TILE = 512
ISLANDS = ((20_000, 30_000), (55_000, 60_000), (80_000, 15_000), (35_000, 85_000))
ISLAND_RADIUS = 4_000


def draw_tile(level: int, x: int, y: int, tile: int) -> np.ndarray | None:
    """One tile of the synthetic slide: four discs of textured pink tissue; every tile away
    from them is left out of the file (None: a sparse tile, which readers show as empty)."""
    scale = 4 ** level
    near = [(cx, cy) for cx, cy in ISLANDS
            if abs(cx - (x + tile / 2) * scale) < ISLAND_RADIUS + tile * scale
            and abs(cy - (y + tile / 2) * scale) < ISLAND_RADIUS + tile * scale]
    if not near:
        return None
    ys, xs = np.mgrid[y:y + tile, x:x + tile] * scale
    inside = np.zeros((tile, tile), bool)
    for cx, cy in near:
        inside |= (xs - cx) ** 2 + (ys - cy) ** 2 < ISLAND_RADIUS ** 2
    out = np.full((tile, tile, 3), 242, np.uint8)
    rng = np.random.default_rng(x * 7919 + y * 104729 + level)
    texture = rng.integers(-30, 30, (tile, tile, 1))
    pink = np.clip(np.array([200, 110, 170]) + texture, 0, 255).astype(np.uint8)
    out[inside] = pink[inside]
    return out


def write_synthetic(path: Path) -> Path:
    return write_procedural_tiff(path, width=SIDE, height=SIDE, mpp=0.25, draw=draw_tile,
                                 tile=TILE, downsamples=(1, 4, 16, 64, 256))


def _memory() -> dict[str, float]:
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # MiB
    return values


# -- throughput ---------------------------------------------------------------------------
def _raw_worker(args: tuple[str, np.ndarray, int, int]) -> int:
    import openslide

    path, coords, level, size = args
    slide = openslide.OpenSlide(path if Path(path).is_file() else _first_file(path))
    for x, y in coords:
        slide.read_region((int(x), int(y)), level, (size, size))
    return len(coords)


def _first_file(folder: str) -> str:
    return str(sorted(Path(folder).glob("*.dcm"))[0])


def _ours_worker(args: tuple[str, str, np.ndarray]) -> int:
    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker
    path, coords_file, indices = args
    dataset = SlidePatchDataset(path, coords_file)
    for index in indices:
        dataset[int(index)]
    return len(indices)


def _rate(worker, tasks: list, workers: int) -> float:
    context = mp.get_context("spawn")
    with context.Pool(workers) as pool:
        pool.map(worker, tasks[:workers])  # warm: imports and slide opening
        start = time.perf_counter()
        done = sum(pool.map(worker, tasks))
        return done / (time.perf_counter() - start)


def throughput(path: Path, scratch: Path, patches: int, workers: int, config: GridConfig
               ) -> dict[str, float | int | str]:
    with Slide(path) as slide:
        grid = make_grid(slide, config)
        info = slide.info()
    coords_file = write_coords(grid, scratch / f"{path.stem}.h5")
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(grid.coords), size=patches, replace=len(grid.coords) < patches)
    chunks = np.array_split(chosen, workers * 4)
    raw = _rate(_raw_worker, [(str(path), grid.coords[c], grid.level, grid.read_size)
                              for c in chunks], workers)
    ours = _rate(_ours_worker, [(str(path), str(coords_file), c) for c in chunks], workers)
    return {"slide": path.name, "size": f"{info.width}x{info.height}",
            "grid_patches": len(grid.coords), "patches_read": patches,
            "patch": f"{config.size} px at {config.mpp} µm/px (level {grid.level})",
            "raw_per_s": raw, "radpath_per_s": ours, "ratio": raw / ours}


# -- memory -------------------------------------------------------------------------------
def _memory_run(path: str, patches: int, queue) -> None:
    steps = [("start", _memory())]
    slide = Slide(path)
    steps.append(("slide opened", _memory()))
    grid = make_grid(slide, GridConfig(mpp=0.5, size=256))
    steps.append((f"tissue + grid ({len(grid.coords)} patches)", _memory()))
    write_coords(grid, Path(path).with_suffix(".h5"))
    dataset = SlidePatchDataset(path, Path(path).with_suffix(".h5"))
    steps.append(("coords written", _memory()))
    # Every patch in a random order, then again, until ``patches`` reads.
    rng = np.random.default_rng(1)
    order = np.concatenate([rng.permutation(len(dataset))
                            for _ in range(-(-patches // len(dataset)))])
    marks = {patches // 8, patches // 2, patches}
    for count, index in enumerate(order[:patches], start=1):
        dataset[int(index)]
        if count in marks:
            steps.append((f"{count} patches read", _memory()))
    queue.put(steps)


def memory(path: Path, patches: int) -> list[tuple[str, dict[str, float]]]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_run, args=(str(path), patches, queue))
    process.start()
    steps = queue.get()
    process.join()
    return steps


def write_results(rates: list[dict], steps: list, meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "wsi_patches.json").write_text(json.dumps(
        {"meta": meta, "throughput": rates, "memory": steps}, indent=2) + "\n")
    lines = ["# Whole-slide patch reading", "",
             f"`benchmarks/wsi_patches.py --patches {meta['patches']} --workers "
             f"{meta['workers']}`; {meta['cpus']} CPUs, {meta['host_load']} load average at "
             f"start; Python {meta['python']}.", "",
             "## Patches per second (raw OpenSlide `read_region` against radpath's dataset)",
             "", "| slide | size | patch | grid patches | read | raw OpenSlide /s | "
             "radpath /s | raw ÷ radpath |", "|---|---|---|---|---|---|---|---|"]
    for r in rates:
        lines.append(f"| {r['slide']} | {r['size']} | {r['patch']} | {r['grid_patches']} | "
                     f"{r['patches_read']} | {r['raw_per_s']:.0f} | {r['radpath_per_s']:.0f} | "
                     f"{r['ratio']:.2f} |")
    lines += ["", "Goal: radpath within 2x of raw (ratio at most 2).", "",
              "## Memory on the synthetic 100k x 100k slide (one process)", "",
              "| step | resident MiB | peak so far MiB | peak above start MiB |",
              "|---|---|---|---|"]
    base = steps[0][1]["VmRSS"]
    lines += [f"| {name} | {m['VmRSS']:.0f} | {m['VmHWM']:.0f} | {m['VmHWM'] - base:.0f} |"
              for name, m in steps]
    lines += ["", "Goal: flat, under 1 GB (1024 MiB). \"start\" is the process with Python, "
              "torch, OpenSlide and OpenCV imported, before the slide is opened.", ""]
    (RESULTS / "wsi_patches.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    meta = {"patches": args.patches, "workers": args.workers, "cpus": os.cpu_count(),
            "host_load": f"{os.getloadavg()[0]:.1f}", "python": platform.python_version()}
    rates = []
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        started = time.perf_counter()
        synthetic = write_synthetic(scratch / "synthetic-100k.tif")
        meta["synthetic_write_s"] = round(time.perf_counter() - started, 1)
        meta["synthetic_bytes"] = synthetic.stat().st_size
        if REAL_SLIDE.is_dir():
            rates.append(throughput(REAL_SLIDE, scratch, args.patches, args.workers,
                                    GridConfig(mpp=0.5, size=256)))
        rates.append(throughput(synthetic, scratch, args.patches, args.workers,
                                GridConfig(mpp=0.5, size=256)))
        steps = memory(synthetic, args.patches)
    write_results(rates, steps, meta)
    print((RESULTS / "wsi_patches.md").read_text())


if __name__ == "__main__":
    main()
