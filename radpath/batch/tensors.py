"""The numbers of the batch contract: normalisation, lesion maps and the rows of the images
that exist.

* mammograms: ``(x - 0.5) / 0.25`` on the [0, 1] preprocessed image, so the breast sits
  roughly around zero and the (zero) background at -2;
* H&E tiles: ImageNet mean and standard deviation, as pretrained backbones expect.

Loaders, test-time interventions, explanations and the web viewer read these constants
from here, so that a tensor means the same everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

MAMMO_MEAN, MAMMO_STD = 0.5, 0.25
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def lesion_map(lesions: np.ndarray, size: int, patch: int) -> np.ndarray:
    """A (size // patch)^2 map: 1 on cells whose centre lies inside a lesion circle.

    Args:
        lesions: (K, 3) circles ``x, y, r`` in pixels of the ``size`` x ``size`` image.
        size: side of the image.
        patch: side of a grid cell.

    Returns:
        float32 (g, g) map. A lesion smaller than a cell still marks the cell holding its
        centre.
    """
    grid = size // patch
    out = np.zeros((grid, grid), dtype=np.float32)
    centres = (np.arange(grid, dtype=np.float64) + 0.5) * patch
    for x, y, r in np.asarray(lesions, dtype=np.float64).reshape(-1, 3):
        inside = (centres[None, :] - x) ** 2 + (centres[:, None] - y) ** 2 <= r * r
        out[inside] = 1.0
        i, j = math.floor(y / patch), math.floor(x / patch)
        if 0 <= i < grid and 0 <= j < grid:
            out[i, j] = 1.0
    return out

def tile_tensor(tiles: np.ndarray) -> torch.Tensor:
    """8-bit RGB tiles ``(N, h, w, 3)`` as the model reads them: ``(N, 3, h, w)``, ImageNet
    normalised."""
    scaled = (np.asarray(tiles).astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))


def valid_rows(batch: Mapping[str, Tensor], modality: str) -> Tensor:
    """Flat positions (``unit * bag + slot``) of the images of ``modality`` that exist.

    The batch's ``{modality}_rows`` when it has them: the collate function finds them on
    the host, where finding them from the masks on a GPU would wait for the device.
    """
    rows = batch.get(f"{modality}_rows")
    if rows is not None:
        return rows
    mask = batch[f"{modality}_mask"].bool() & batch[f"has_{modality}"].bool()[:, None]
    return mask.reshape(-1).nonzero().squeeze(1)
