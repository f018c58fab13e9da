"""Lesion polygons of CAMELYON's ASAP XML annotations, and what they say about patches.

An ASAP file holds ``<Annotation PartOfGroup=...><Coordinates><Coordinate X= Y=/>``
polygons in level-0 pixels. In CAMELYON16 the groups ``_0`` and ``_1`` (CAMELYON17:
``metastases``) outline tumour, and ``_2`` (``Exclusion``) outlines normal tissue inside a
tumour outline, which is not tumour.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radpath.errors import RadpathError

EXCLUSION_GROUPS = frozenset({"_2", "exclusion", "none"})


@dataclass(frozen=True)
class Polygon:
    """One annotated outline: ``(N, 2)`` float level-0 ``(x, y)`` vertices."""

    points: np.ndarray
    group: str

    @property
    def is_exclusion(self) -> bool:
        return self.group.lower() in EXCLUSION_GROUPS

    def bounds(self) -> tuple[float, float, float, float]:
        x0, y0 = self.points.min(axis=0)
        x1, y1 = self.points.max(axis=0)
        return float(x0), float(y0), float(x1), float(y1)


def read_asap_xml(path: str | Path) -> list[Polygon]:
    """The polygons of an ASAP XML file; an error naming the file when it is not one."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise RadpathError(f"{path}: not a readable ASAP XML annotation ({exc})") from None
    polygons = []
    for annotation in root.iter("Annotation"):
        points = [(float(c.get("X", "nan")), float(c.get("Y", "nan")))
                  for c in annotation.iter("Coordinate")]
        array = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if len(array) < 3 or not np.isfinite(array).all():
            raise RadpathError(f"{path}: annotation {annotation.get('Name')!r} needs three or "
                               "more finite X, Y coordinates")
        polygons.append(Polygon(array, annotation.get("PartOfGroup", "")))
    return polygons


def rasterise(polygons: list[Polygon], shape: tuple[int, int], downsample: float) -> np.ndarray:
    """Tumour mask ``shape`` (rows, cols) at ``downsample`` from level 0: outlines filled,
    exclusions cut back out."""
    import cv2

    mask = np.zeros(shape, np.uint8)
    for value, keep in ((1, False), (0, True)):
        shapes = [np.round(p.points / downsample).astype(np.int32)
                  for p in polygons if p.is_exclusion == keep]
        if shapes:
            cv2.fillPoly(mask, shapes, value)
    return mask.astype(bool)


def patch_tumour_fraction(polygons: list[Polygon], coords: np.ndarray, size0: int,
                          dimensions: tuple[int, int], *, grid: int = 8) -> np.ndarray:
    """Fraction of each patch (level-0 corner ``coords``, side ``size0``) inside tumour.

    Estimated on a ``grid`` x ``grid`` lattice of points per patch, against the polygons
    rasterised at the scale where one lattice cell is one pixel (never the whole slide at
    level 0).
    """
    if not polygons or len(coords) == 0:
        return np.zeros(len(coords), np.float32)
    downsample = max(1.0, size0 / grid)
    width, height = dimensions
    mask = rasterise(polygons, (int(np.ceil(height / downsample)) + 1,
                                int(np.ceil(width / downsample)) + 1), downsample)
    offsets = (np.arange(grid) + 0.5) * size0 / grid
    xs = (coords[:, 0:1] + offsets[None, :]) / downsample
    ys = (coords[:, 1:2] + offsets[None, :]) / downsample
    cols = np.clip(xs.astype(np.int64), 0, mask.shape[1] - 1)
    rows = np.clip(ys.astype(np.int64), 0, mask.shape[0] - 1)
    hits = mask[rows[:, :, None], cols[:, None, :]]
    return hits.mean(axis=(1, 2)).astype(np.float32)


def lesions(polygons: list[Polygon]) -> list[Polygon]:
    """The tumour outlines (exclusions left out): the lesions a hit rate counts."""
    return [p for p in polygons if not p.is_exclusion]
