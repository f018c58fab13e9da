"""Tissue detection on a slide thumbnail: where the patch grid may go.

Saturation thresholded at Otsu's level (the tile tissue mask of ``radpath.data.histo``),
after pen marks are masked out, then a morphological closing that bridges the gaps
between nearby nuclei, removal of specks and filling of the holes smaller than
``max_hole_um2`` (larger holes — vessels, fat, tears — stay background, as in CLAM).
"""

from __future__ import annotations

import cv2
import numpy as np
import pydantic

from radpath.data.histo import tissue_mask as saturation_mask

# Pen inks in OpenCV's HSV (hue 0-180): blue and green lie far from the eosin-pink and
# haematoxylin-purple hues of H&E (about 120-180 and 0-10); black ink is dark and unsaturated.
_PEN_HUES = ((35, 85), (90, 128))  # green, blue
_PEN_MIN_SATURATION = 60
_BLACK_INK_VALUE = 60


class TissueConfig(pydantic.BaseModel):
    """Tissue detection settings (areas in square microns, so they hold at any thumbnail size).

    Attributes:
        thumbnail_side: longer side of the thumbnail the mask is computed on.
        close_um: side of the square structuring element of the closing.
        min_tissue_um2: tissue components smaller than this are specks, dropped.
        max_hole_um2: holes smaller than this inside tissue are filled.
        remove_pen: mask blue, green and black ink out before thresholding.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    thumbnail_side: int = pydantic.Field(2048, ge=64)
    close_um: float = pydantic.Field(16.0, ge=0)
    min_tissue_um2: float = pydantic.Field(20_000.0, ge=0)
    max_hole_um2: float = pydantic.Field(10_000.0, ge=0)
    remove_pen: bool = True


def pen_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels of blue, green or black marker ink."""
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured = np.zeros(hue.shape, dtype=bool)
    for low, high in _PEN_HUES:
        coloured |= (hue >= low) & (hue <= high) & (sat >= _PEN_MIN_SATURATION)
    return coloured | (val < _BLACK_INK_VALUE)


def detect_tissue(thumbnail: np.ndarray, um_per_pixel: float | None,
                  config: TissueConfig | None = None) -> np.ndarray:
    """Boolean tissue mask of ``thumbnail`` (True on tissue).

    Args:
        thumbnail: uint8 RGB thumbnail of the slide.
        um_per_pixel: microns per thumbnail pixel (slide mpp × thumbnail downsample); None
            means unknown, and the morphology then works in thumbnail pixels as if 8 µm/px.
        config: detection settings.
    """
    config = config or TissueConfig()
    um = um_per_pixel or 8.0
    pens = pen_mask(thumbnail) if config.remove_pen else np.zeros(thumbnail.shape[:2], bool)
    mask = saturation_mask(thumbnail) & ~pens
    side = round(config.close_um / um)
    if side >= 2:
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
        mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
    mask = _drop_components(mask, config.min_tissue_um2 / um**2)
    holes = _drop_components(~mask, config.max_hole_um2 / um**2, keep_border=True)
    return (~holes) & ~pens


def _drop_components(mask: np.ndarray, max_area: float, *, keep_border: bool = False
                     ) -> np.ndarray:
    """``mask`` without 8-connected components of at most ``max_area`` pixels.

    With ``keep_border`` components touching the image edge stay whatever their size: the
    background around the tissue is not a hole.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                               connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] > max_area
    if keep_border:
        height, width = mask.shape
        left, top = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        right = left + stats[:, cv2.CC_STAT_WIDTH]
        bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
        keep |= (left == 0) | (top == 0) | (right == width) | (bottom == height)
    keep[0] = False  # label 0 lies outside the mask
    return keep[labels] if count > 1 else np.zeros_like(mask, dtype=bool)
