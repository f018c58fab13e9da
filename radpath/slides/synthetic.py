"""Pyramidal TIFFs for tests and benchmarks: from given pixels, or drawn tile by tile.

Written with tifffile as a tiled, losslessly compressed generic TIFF pyramid (one
full-resolution IFD, then reduced-resolution IFDs), which OpenSlide reads as "generic-tiff".
The resolution tags carry the microns per pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from radpath.atomic import atomic_path

# (level, x, y, tile) -> RGB tile, or None for a tile left out of the file (sparse)
TileFn = Callable[[int, int, int, int], np.ndarray | None]


def _pyramid(level0: np.ndarray, min_side: int) -> list[np.ndarray]:
    import cv2

    levels = [level0]
    while min(levels[-1].shape[:2]) // 2 >= min_side:
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return levels


def write_pyramidal_tiff(level0: np.ndarray, path: str | Path, *, mpp: float,
                         tile: int = 256, min_side: int = 64) -> Path:
    """Write ``level0`` (uint8 RGB) and its halvings as a tiled pyramidal TIFF."""
    levels = _pyramid(level0, min_side)
    return _write(path, [lv.shape[:2] for lv in levels], mpp, tile,
                  lambda lv, x, y, t: _crop(levels[lv], x, y, t))


def write_procedural_tiff(path: str | Path, *, width: int, height: int, mpp: float,
                          draw: TileFn, tile: int = 512, downsamples: tuple[int, ...] = (1,)
                          ) -> Path:
    """A slide of any size drawn tile by tile by ``draw``; memory stays one tile.

    Args:
        draw: returns the RGB tile of ``level`` whose top-left is ``(x, y)`` in that level,
            or None to leave the tile out (zero bytes: readers show it as empty glass).
        downsamples: the pyramid's integer downsamples, starting at 1.
    """
    shapes = [(height // d, width // d) for d in downsamples]
    return _write(path, shapes, mpp, tile, draw)


def _crop(image: np.ndarray, x: int, y: int, tile: int) -> np.ndarray:
    out = np.full((tile, tile, 3), 255, dtype=np.uint8)
    part = image[y:y + tile, x:x + tile]
    out[:part.shape[0], :part.shape[1]] = part
    return out


def _tiles(shape: tuple[int, int], tile: int, level: int, draw: TileFn
           ) -> Iterator[np.ndarray | None]:
    height, width = shape
    first = True
    for y in range(0, height, tile):
        for x in range(0, width, tile):
            chunk = draw(level, x, y, tile)
            if first and chunk is None:
                # tifffile reads the dtype off the first tile: write that one as glass.
                chunk = np.full((tile, tile, 3), 255, np.uint8)
            first = False
            yield chunk


def _write(path: str | Path, shapes: list[tuple[int, int]], mpp: float, tile: int,
           draw: TileFn) -> Path:
    import tifffile

    per_cm = 1e4 / mpp
    path = Path(path)
    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as writer:
        for level, shape in enumerate(shapes):
            scale = shape[1] / shapes[0][1]
            writer.write(_tiles(shape, tile, level, draw), shape=(*shape, 3), dtype=np.uint8,
                         tile=(tile, tile), photometric="rgb", compression="zlib",
                         subfiletype=0 if level == 0 else 1,
                         resolution=(per_cm * scale, per_cm * scale), resolutionunit="CENTIMETER")
    return path
