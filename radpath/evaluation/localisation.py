"""Does an explanation heatmap point at the lesion? Pointing-game hit rate and distance.

Coordinates: ``x`` runs along columns and ``y`` along rows, and a pixel covers
``[col, col + 1) x [row, row + 1)``, so the centre of pixel ``(row, col)`` is
``(col + 0.5, row + 0.5)``. Lesions are circles ``(x, y, r)`` in image pixel coordinates
with the same convention. A heatmap usually has a coarser grid than the image:
:func:`scale_to_image` builds the ``to_image`` mapping for a heatmap laid over the whole
image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from radpath.stats.estimate import Estimate, check_level, percentile_interval, wilson_interval

ToImage = Callable[[np.ndarray], np.ndarray]


def _heatmap(heatmap: Any) -> np.ndarray:
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError(f"heatmap must be a non-empty (H, W) array, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError(f"heatmap holds {int((~np.isfinite(heatmap)).sum())} non-finite values")
    return heatmap


def _lesions(lesions: Any) -> np.ndarray:
    lesions = np.asarray(lesions, dtype=np.float64)
    if lesions.size == 0:
        raise ValueError("localisation needs at least one lesion (x, y, r); got none")
    if lesions.ndim == 1:
        lesions = lesions[None, :]
    if lesions.ndim != 2 or lesions.shape[1] != 3:
        raise ValueError(f"lesions must be (K, 3) circles (x, y, r), got shape {lesions.shape}")
    if not np.isfinite(lesions).all() or (lesions[:, 2] < 0).any():
        raise ValueError(f"lesions must be finite (x, y, r) with r >= 0, got {lesions.tolist()}")
    return lesions


def _image_size(image_size: tuple[int, int]) -> tuple[float, float]:
    h, w = (float(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size (h, w) must be positive, got {image_size}")
    return h, w


def peak_location(heatmap: Any) -> tuple[float, float]:
    """Centre ``(x, y) = (col + 0.5, row + 0.5)`` of the heatmap's maximum.

    On ties the first maximum in row-major order wins.
    """
    heatmap = _heatmap(heatmap)
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return float(col) + 0.5, float(row) + 0.5


def scale_to_image(heatmap_shape: tuple[int, int], image_size: tuple[int, int]) -> ToImage:
    """``to_image`` for a ``(H, W)`` heatmap stretched over an image of ``(h, w)`` pixels."""
    h, w = _image_size(image_size)
    rows, cols = heatmap_shape
    scale = np.array([w / cols, h / rows])

    def to_image(xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy, dtype=np.float64) * scale

    return to_image


def _to_image_xy(heatmap: np.ndarray, to_image: ToImage | None) -> np.ndarray:
    peak = np.array([peak_location(heatmap)])
    if to_image is None:
        return peak[0]
    mapped = np.asarray(to_image(peak), dtype=np.float64)
    if mapped.shape != (1, 2):
        raise ValueError(f"to_image must map (N, 2) points to (N, 2), gave shape {mapped.shape}")
    return mapped[0]


def localisation_hit(heatmap: Any, lesions: Any, *, to_image: ToImage | None = None) -> bool:
    """Whether the heatmap's peak, mapped by ``to_image``, lies in a lesion circle.

    Args:
        heatmap: ``(H, W)`` saliency; higher means more relevant.
        lesions: ``(K, 3)`` circles ``(x, y, r)`` in image coordinates (boundary counts).
        to_image: maps ``(N, 2)`` heatmap ``xy`` to image ``xy``; identity when None.
    """
    lesions = _lesions(lesions)
    peak = _to_image_xy(_heatmap(heatmap), to_image)
    distances = np.hypot(lesions[:, 0] - peak[0], lesions[:, 1] - peak[1])
    return bool((distances <= lesions[:, 2]).any())


def normalised_distance(peak_xy: tuple[float, float], lesions: Any,
                        image_size: tuple[int, int]) -> float:
    """Distance from ``peak_xy`` (image coordinates) to the nearest lesion centre.

    Divided by the image diagonal, so 0 is on a centre and 1 is corner to corner.
    """
    lesions = _lesions(lesions)
    h, w = _image_size(image_size)
    x, y = (float(v) for v in peak_xy)
    nearest = np.hypot(lesions[:, 0] - x, lesions[:, 1] - y).min()
    return float(nearest / np.hypot(h, w))


@dataclass(frozen=True)
class LocalisationResult:
    """Hit rate (Wilson interval) and mean normalised distance (bootstrap interval)."""

    hit_rate: Estimate
    mean_distance: Estimate


class LocalisationMetric:
    """Accumulates, per lesion-bearing image, a pointing-game hit and a peak distance."""

    def __init__(self, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> None:
        check_level(level)
        self.n_boot, self.seed, self.level = n_boot, seed, level
        self.reset()

    def reset(self) -> None:
        self._hits: list[bool] = []
        self._distances: list[float] = []

    def update(self, heatmap: Any, lesions: Any, image_size: tuple[int, int], *,
               to_image: ToImage | None = None) -> None:
        """Score one image; ``to_image`` as in :func:`localisation_hit`."""
        heatmap, lesions = _heatmap(heatmap), _lesions(lesions)
        peak = _to_image_xy(heatmap, to_image)
        self._hits.append(localisation_hit(heatmap, lesions, to_image=to_image))
        self._distances.append(normalised_distance(tuple(peak), lesions, image_size))

    def compute(self) -> LocalisationResult:
        if not self._hits:
            raise ValueError("LocalisationMetric.compute() called before any update()")
        hit_rate = wilson_interval(int(sum(self._hits)), len(self._hits), self.level)
        distances = np.asarray(self._distances)
        rng = np.random.default_rng(self.seed)
        picked = rng.integers(0, len(distances), size=(self.n_boot, len(distances)))
        low, high = percentile_interval(distances[picked].mean(axis=1), self.level)
        mean = Estimate(float(distances.mean()), low, high, len(distances))
        return LocalisationResult(hit_rate, mean)
