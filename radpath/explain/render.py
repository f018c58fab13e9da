"""Drawing explanations with OpenCV: heatmaps, overlays, numbered regions and the figure.

Images here are OpenCV's BGR (or BGRA) ``uint8`` arrays; :func:`png` encodes one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from radpath.errors import RadpathError

FONT = cv2.FONT_HERSHEY_SIMPLEX
REGION_COLOUR = (255, 255, 0)  # cyan in BGR: stands out from the jet colour map
TEXT_COLOUR = (235, 235, 235)
BACKGROUND = (24, 24, 24)


@dataclass(frozen=True)
class Circle:
    """A numbered region in display pixels."""

    rank: int
    x: float
    y: float
    r: float


@dataclass(frozen=True)
class TileRow:
    """A figure row: a region's rank, score, and its linked tiles ``(rgb, similarity)``."""

    rank: int
    score: float
    tiles: Sequence[tuple[np.ndarray, float]]


def png(image: np.ndarray) -> bytes:
    """PNG bytes of a BGR, BGRA or grey ``uint8`` image."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:
        raise RadpathError(f"PNG encoding failed for an image of shape {image.shape}")
    return data.tobytes()


def grey_to_bgr(grey: np.ndarray) -> np.ndarray:
    """A [0, 1] float or ``uint8`` grey image as BGR ``uint8``."""
    if grey.dtype != np.uint8:
        grey = np.clip(np.asarray(grey, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def heat_colours(heat: np.ndarray) -> np.ndarray:
    """BGR jet colours of a [0, 1] map."""
    levels = np.clip(np.asarray(heat, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(levels, cv2.COLORMAP_JET)


def heat_rgba(heat: np.ndarray) -> np.ndarray:
    """BGRA heatmap whose alpha is the map value: blend it over the base at any opacity."""
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0)
    alpha = np.clip(heat * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.dstack([heat_colours(heat), alpha])


def overlay(grey: np.ndarray, heat: np.ndarray, circles: Sequence[Circle], *,
            opacity: float = 0.45) -> np.ndarray:
    """The grey image with the heatmap blended in (weight ``opacity x value``) and circles."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    base = grey_to_bgr(grey).astype(np.float32)
    weight = (opacity * np.clip(heat, 0.0, 1.0))[..., None]
    blended = base * (1.0 - weight) + heat_colours(heat).astype(np.float32) * weight
    out = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    draw_circles(out, circles)
    return out


def draw_circles(image: np.ndarray, circles: Sequence[Circle]) -> None:
    """Draw numbered circles in place."""
    thickness = max(1, round(max(image.shape[:2]) / 300))
    scale = max(0.4, max(image.shape[:2]) / 800)
    for circle in circles:
        centre = (round(circle.x), round(circle.y))
        cv2.circle(image, centre, max(2, round(circle.r)), REGION_COLOUR, thickness,
                   cv2.LINE_AA)
        label = str(circle.rank)
        (w, h), _ = cv2.getTextSize(label, FONT, scale, thickness)
        at = (round(circle.x + circle.r * 0.72), round(circle.y - circle.r * 0.72))
        at = (min(max(at[0], 0), image.shape[1] - w), min(max(at[1], h), image.shape[0] - 1))
        cv2.putText(image, label, at, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
        cv2.putText(image, label, at, FONT, scale, REGION_COLOUR, thickness, cv2.LINE_AA)


def _text(image: np.ndarray, text: str, at: tuple[int, int], scale: float = 0.5) -> None:
    cv2.putText(image, text, at, FONT, scale, TEXT_COLOUR, 1, cv2.LINE_AA)


SIMILARITY_NOTE = "sim: cosine in the shared space, region less its view (link_method)"


def figure(left: np.ndarray, rows: Sequence[TileRow], *, title: str = "",
           height: int = 640, tile_side: int = 128,
           note: str = SIMILARITY_NOTE) -> np.ndarray:
    """The mammogram panel on the left, one row of linked tiles per region on the right.

    Args:
        left: BGR overlay of the mammogram (heatmap and numbered regions).
        rows: the regions and their tiles, in rank order.
        title: a line printed on top.
        height: height of the mammogram panel in pixels.
        tile_side: side of each tile thumbnail.
        note: a line under the tiles saying how similarity is computed (drawn when
            any tile is linked).
    """
    scale = height / left.shape[0]
    panel = cv2.resize(left, (max(1, round(left.shape[1] * scale)), height),
                       interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    most = max((len(row.tiles) for row in rows), default=0)
    label_w, gap, head = 90, 10, 34
    right_w = label_w + max(1, most) * (tile_side + gap) + gap
    row_h = tile_side + 26
    total_h = head + max(height, len(rows) * row_h + gap + 24)
    canvas = np.full((total_h, panel.shape[1] + gap + right_w, 3), BACKGROUND, np.uint8)
    canvas[head:head + height, : panel.shape[1]] = panel
    _text(canvas, title, (8, 22), 0.55)
    x0 = panel.shape[1] + gap
    if not rows:
        _text(canvas, "no region found", (x0, head + 24))
    for k, row in enumerate(rows):
        y = head + k * row_h
        _text(canvas, f"region {row.rank}", (x0, y + 20))
        _text(canvas, f"score {row.score:.2f}", (x0, y + 40), 0.42)
        if not row.tiles:  # beside the region's label, never over it
            _text(canvas, "no histology linked", (x0 + label_w, y + 20), 0.42)
        for t, (tile, similarity) in enumerate(row.tiles):
            x = x0 + label_w + t * (tile_side + gap)
            thumb = cv2.resize(cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), (tile_side, tile_side),
                               interpolation=cv2.INTER_AREA)
            canvas[y:y + tile_side, x:x + tile_side] = thumb
            _text(canvas, f"sim {similarity:+.2f}", (x, y + tile_side + 16), 0.42)
    if most and note:
        _text(canvas, note, (x0, head + len(rows) * row_h + 16), 0.4)
    return canvas
