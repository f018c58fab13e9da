"""Patches of one slide as a torch ``Dataset``, read lazily from its coordinates.

Each worker opens its own handle on first use (OpenSlide handles are not shared across
processes), so a ``DataLoader`` with workers reads patches in parallel, region by region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from radpath.data.wsi import Slide
from radpath.slides.grid import read_coords, read_patch_at


class SlidePatchDataset(Dataset):
    """The patches of ``coords_file`` on ``slide_path``.

    Items are ``(patch, (x, y))``: a float tensor ``(3, size, size)`` in [0, 1] (or the uint8
    HWC array with ``as_array``) and its level-0 corner.
    """

    def __init__(self, slide_path: str | Path, coords_file: str | Path, *,
                 slide_mpp: float | None = None, as_array: bool = False) -> None:
        stored = read_coords(coords_file)
        self.slide_path = Path(slide_path)
        self.coords = stored.coords
        self.level, self.read_size, self.size = (stored.patch_level, stored.patch_size,
                                                 stored.target_size)
        self.slide_mpp = slide_mpp
        self.as_array = as_array
        self._slide: Slide | None = None
        self._pid = -1

    def __len__(self) -> int:
        return len(self.coords)

    def _handle(self) -> Slide:
        import os

        if self._slide is None or self._pid != os.getpid():
            self._slide = Slide(self.slide_path, mpp=self.slide_mpp)
            self._pid = os.getpid()
        return self._slide

    def __getitem__(self, index: int) -> tuple[torch.Tensor | np.ndarray, tuple[int, int]]:
        x, y = (int(v) for v in self.coords[index])
        patch = read_patch_at(self._handle(), x, y, self.level, self.read_size, self.size)
        if self.as_array:
            return patch, (x, y)
        # numpy, not torch ops: torch's intra-op threads cost more than they save per patch.
        scaled = patch.transpose(2, 0, 1).astype(np.float32)
        scaled *= 1.0 / 255.0
        return torch.from_numpy(scaled), (x, y)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_slide"] = None  # each worker opens its own handle
        return state
