"""The patch grid of a slide at a target µm/px and size, stored in CLAM's ``coords`` layout.

A patch is kept when enough of it is tissue on the thumbnail mask. Coordinates are level-0
top-left ``(x, y)`` integers; pixels are read later, patch by patch, from the pyramid level
nearest the target resolution (never finer than needed), so a slide is never decoded whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic

from radpath.atomic import atomic_path
from radpath.data.wsi import Slide
from radpath.errors import RadpathError
from radpath.slides.tissue import TissueConfig, detect_tissue


class GridConfig(pydantic.BaseModel):
    """Patch grid settings.

    Attributes:
        mpp: target microns per pixel of a patch.
        size: side of a patch in target pixels.
        stride: step between patches in target pixels (None: ``size``, no overlap).
        min_tissue: fraction of a patch that must be tissue on the thumbnail mask.
        mpp_tolerance: a pyramid level within this relative distance of the target mpp is
            read as it is, without resampling (a 0.499 µm/px scan serves 0.5 µm/px).
        tissue: tissue detection settings.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    mpp: float = pydantic.Field(0.5, gt=0)
    size: int = pydantic.Field(256, gt=0)
    stride: int | None = pydantic.Field(None, gt=0)
    min_tissue: float = pydantic.Field(0.25, ge=0, le=1)
    mpp_tolerance: float = pydantic.Field(0.02, ge=0, lt=0.5)
    tissue: TissueConfig = TissueConfig()


@dataclass(frozen=True)
class PatchGrid:
    """The patches of one slide.

    Attributes:
        coords: ``(N, 2)`` int64 level-0 top-left ``(x, y)``.
        level: pyramid level patches are read from.
        read_size: side of a patch at ``level`` (CLAM's ``patch_size``).
        size: side of a patch once resized to the target mpp.
        level0_size: side of a patch in level-0 pixels.
        mpp: target microns per pixel; ``slide_mpp`` the slide's at level 0.
        tissue: the thumbnail tissue mask; ``mask_downsample`` its scale from level 0.
    """

    coords: np.ndarray
    level: int
    read_size: int
    size: int
    level0_size: int
    mpp: float
    slide_mpp: float
    tissue: np.ndarray
    mask_downsample: float


def plan_levels(slide: Slide, mpp: float, size: int, tolerance: float = 0.0
                ) -> tuple[int, int, int]:
    """``(level, read_size, level0_size)`` for patches of ``size`` px at ``mpp``."""
    downsample = mpp / slide.require_mpp()
    level = slide.best_level_for_downsample(downsample * (1 + tolerance))
    factor = slide.level_downsamples[level]
    if abs(factor / downsample - 1) <= tolerance:
        return level, size, max(1, round(size * factor))
    read_size = max(1, round(size * downsample / factor))
    return level, read_size, max(1, round(size * downsample))


def make_grid(slide: Slide, config: GridConfig | None = None) -> PatchGrid:
    """Detect tissue on a thumbnail and lay the patch grid over it."""
    config = config or GridConfig()
    level, read_size, level0_size = plan_levels(slide, config.mpp, config.size,
                                                   config.mpp_tolerance)
    if min(slide.dimensions) < level0_size:
        raise RadpathError(f"{slide.path}: slide ({slide.dimensions[0]}x{slide.dimensions[1]} "
                           f"px) is smaller than one {config.size}px patch at {config.mpp} µm/px")
    thumbnail, mask_downsample = slide.thumbnail(config.tissue.thumbnail_side)
    mask = detect_tissue(thumbnail, slide.mpp * mask_downsample, config.tissue)
    step0 = max(1, round(level0_size * (config.stride or config.size) / config.size))
    coords = _tissue_patches(mask, mask_downsample, slide.dimensions, level0_size, step0,
                             config.min_tissue)
    return PatchGrid(coords, level, read_size, config.size, level0_size, config.mpp,
                     slide.require_mpp(), mask, mask_downsample)


def _tissue_patches(mask: np.ndarray, downsample: float, dimensions: tuple[int, int],
                    size0: int, step0: int, min_tissue: float) -> np.ndarray:
    """Level-0 corners of the full patches whose mask area is at least ``min_tissue`` tissue."""
    width, height = dimensions
    xs = np.arange(0, width - size0 + 1, step0, dtype=np.int64)
    ys = np.arange(0, height - size0 + 1, step0, dtype=np.int64)
    # A summed-area table gives every patch's tissue count in O(1).
    table = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    mh, mw = mask.shape

    def edges(starts: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        low = np.clip(np.floor(starts / downsample).astype(np.int64), 0, limit - 1)
        high = np.clip(np.ceil((starts + size0) / downsample).astype(np.int64), low + 1, limit)
        return low, high

    x0, x1 = edges(xs, mw)
    y0, y1 = edges(ys, mh)
    counts = (table[y1][:, x1] - table[y0][:, x1] - table[y1][:, x0] + table[y0][:, x0])
    areas = (y1 - y0)[:, None] * (x1 - x0)[None, :]
    keep_y, keep_x = np.nonzero(counts >= min_tissue * areas - 1e-9)
    return np.stack([xs[keep_x], ys[keep_y]], axis=1).astype(np.int64).reshape(-1, 2)


def read_patch(slide: Slide, grid: PatchGrid, index: int) -> np.ndarray:
    """Patch ``index`` of ``grid`` as uint8 RGB ``(size, size, 3)`` at the target mpp."""
    x, y = (int(v) for v in grid.coords[index])
    return read_patch_at(slide, x, y, grid.level, grid.read_size, grid.size)


def read_patch_at(slide: Slide, x: int, y: int, level: int, read_size: int, size: int
                  ) -> np.ndarray:
    """One patch: read ``read_size`` px at ``level``, resized to ``size`` when they differ."""
    patch = slide.read_region(x, y, level, read_size, read_size)
    if read_size == size:
        return patch
    import cv2

    interpolation = cv2.INTER_AREA if read_size > size else cv2.INTER_LINEAR
    return cv2.resize(patch, (size, size), interpolation=interpolation)


# -- CLAM's coords/<image_id>.h5 -------------------------------------------------------------
def write_coords(grid: PatchGrid, path: str | Path, *, name: str = "") -> Path:
    """Write ``grid`` as CLAM does: dataset ``coords`` with ``patch_size``/``patch_level``.

    Beside CLAM's attributes the dataset records the target ``mpp`` and ``target_size`` and
    the slide's ``slide_mpp``, so the patches can be read back at the resolution chosen.
    Written to a temporary file and renamed, so a crash never leaves a partial file.
    """
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        data = handle.create_dataset("coords", data=grid.coords.astype(np.int64))
        attrs = {"patch_size": grid.read_size, "patch_level": grid.level,
                 "downsample": grid.level0_size / grid.read_size, "mpp": grid.mpp,
                 "target_size": grid.size, "level0_size": grid.level0_size,
                 "slide_mpp": grid.slide_mpp, "name": name}
        for key, value in attrs.items():
            data.attrs[key] = value
    return path


@dataclass(frozen=True)
class StoredCoords:
    """What :func:`read_coords` reads back."""

    coords: np.ndarray
    patch_level: int
    patch_size: int
    target_size: int
    mpp: float
    level0_size: int


def read_coords(path: str | Path) -> StoredCoords:
    """Read a ``coords`` HDF5 file (ours, or CLAM's, whose target size is its patch size)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise RadpathError(f"{path}: coordinates file not found")
    with h5py.File(path, "r") as handle:
        if "coords" not in handle:
            raise RadpathError(f"{path}: no dataset 'coords' (expected CLAM's layout)")
        data = handle["coords"]
        missing = [k for k in ("patch_size", "patch_level") if k not in data.attrs]
        if missing:
            raise RadpathError(f"{path}: dataset 'coords' lacks attribute(s) {missing}")
        coords = np.asarray(data[()], dtype=np.int64).reshape(-1, 2)
        size = int(data.attrs["patch_size"])
        target = int(data.attrs.get("target_size", size))
        mpp = float(data.attrs.get("mpp", math.nan))
        # CLAM records the level's downsample; ours also the level-0 side itself.
        size0 = int(data.attrs.get("level0_size",
                                   round(size * float(data.attrs.get("downsample", 1.0)))))
        return StoredCoords(coords, int(data.attrs["patch_level"]), size, target, mpp, size0)
