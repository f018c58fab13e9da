"""Mammography preprocessing: segment, crop, flip, resize, pad and normalise one film.

Every geometric step is recorded in a :class:`Geometry`, so lesion annotations travel
into the output image and predictions travel back to the original film.

Coordinates are continuous pixel coordinates with the origin at the top-left *corner* of
the image: pixel ``(row i, column j)`` covers ``[j, j+1) x [i, i+1)``. This is the
convention under which OpenCV's resize is an exact scaling and a horizontal flip is
``x -> width - x``. Integer annotations (MIAS, CBIS-DDSM) thus sit half a pixel off the
pixel centre they mean, which is far below any lesion's size.

Laterality convention: a mammogram is displayed as if facing the patient, so a left
breast ("L") has its chest wall on the image's *left* edge and a right breast ("R") on
the *right* edge (MIAS: even numbers are left, odd numbers right). Below, "laterality"
of an image therefore means the side of the image holding the chest wall.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from radpath.data.manifest import Lesion

MIN_SIDE = 16
# Segmentation runs on a copy whose long side is this many pixels: large enough to keep
# the skin line within a few original pixels, small enough to segment a 4600 x 2800
# full-field film in milliseconds.
WORKING_SIDE = 512
# Tissue threshold as a fraction of the way from background to Otsu's threshold. Otsu
# alone splits dense from fatty tissue and cuts the faint skin-line periphery; a
# threshold at 30 % of it keeps the periphery while staying above film grain.
THRESHOLD_FRACTION = 0.3
# Below this relative contrast the film holds no separable breast: use the whole image.
MIN_RELATIVE_CONTRAST = 0.02
# A kept component smaller than this fraction of the image is taken as a failed segmentation.
MIN_MASK_FRACTION = 0.01


class MammoConfig(BaseModel):
    """Settings of :class:`MammoPreprocessor`.

    Attributes:
        size: side of the square output image in pixels.
        segment: set pixels outside the breast mask (background, labels, markers) to 0.
        crop: crop to the bounding box of the breast mask before resizing.
        crop_margin: margin added around the breast box, as a fraction of the image's
            long side.
        flip_to: canonical chest-wall side of the output ("L": left edge, "R": right
            edge, "none": never flip).
        low_percentile: breast-pixel percentile mapped to 0 (computed on the resized
            image, so the cost does not grow with the film).
        high_percentile: breast-pixel percentile mapped to 1.
        clahe: apply contrast-limited adaptive histogram equalisation after normalising.
        clahe_clip: CLAHE clip limit.
        clahe_grid: CLAHE tiles per side.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(512, ge=MIN_SIDE)
    segment: bool = True
    crop: bool = True
    crop_margin: float = Field(0.02, ge=0.0, le=0.5)
    flip_to: Literal["L", "R", "none"] = "L"
    low_percentile: float = Field(1.0, ge=0.0, le=100.0)
    high_percentile: float = Field(99.0, ge=0.0, le=100.0)
    clahe: bool = False
    clahe_clip: float = Field(2.0, gt=0.0)
    clahe_grid: int = Field(8, ge=1, le=64)

    @model_validator(mode="after")
    def _percentiles_ordered(self) -> MammoConfig:
        if self.low_percentile >= self.high_percentile:
            raise ValueError(f"low_percentile ({self.low_percentile}) must be below "
                             f"high_percentile ({self.high_percentile})")
        return self


@dataclass(frozen=True)
class Geometry:
    """The geometric steps from an original film to the output image, in order.

    Attributes:
        original_shape: (height, width) of the original image.
        crop_box: (y0, x0, y1, x1) of the crop in original pixels, end exclusive.
        flipped: whether the crop was mirrored left-right.
        scale: output pixels per original pixel (the same on both axes).
        pad: (top, left) padding added after resizing, in output pixels.
        output_size: side of the square output image.
    """

    original_shape: tuple[int, int]
    crop_box: tuple[int, int, int, int]
    flipped: bool
    scale: float
    pad: tuple[int, int]
    output_size: int

    def to_output(self, xy: np.ndarray) -> np.ndarray:
        """Map (x, y) points of the original image into the output image.

        Args:
            xy: points of shape (..., 2), x then y, in original pixels.

        Returns:
            Float64 points of the same shape, in output pixels.
        """
        xy = _as_points(xy)
        y0, x0, _, x1 = self.crop_box
        x = xy[..., 0] - x0
        if self.flipped:
            x = (x1 - x0) - x
        y = xy[..., 1] - y0
        return np.stack([x * self.scale + self.pad[1], y * self.scale + self.pad[0]], axis=-1)

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Map (x, y) points of the output image back into the original image.

        Args:
            xy: points of shape (..., 2), x then y, in output pixels.

        Returns:
            Float64 points of the same shape, in original pixels.
        """
        xy = _as_points(xy)
        y0, x0, _, x1 = self.crop_box
        x = (xy[..., 0] - self.pad[1]) / self.scale
        if self.flipped:
            x = (x1 - x0) - x
        y = (xy[..., 1] - self.pad[0]) / self.scale
        return np.stack([x + x0, y + y0], axis=-1)

    def lesion_to_output(self, lesion: Lesion) -> Lesion:
        """The lesion circle in output pixels (the radius scales with the image)."""
        x, y = self.to_output(np.array([lesion.x, lesion.y]))
        return Lesion(float(x), float(y), lesion.r * self.scale, lesion.kind)

    def lesion_to_original(self, lesion: Lesion) -> Lesion:
        """The lesion circle of the output image in original pixels."""
        x, y = self.to_original(np.array([lesion.x, lesion.y]))
        return Lesion(float(x), float(y), lesion.r / self.scale, lesion.kind)


@dataclass(frozen=True)
class MammoResult:
    """One preprocessed film.

    Attributes:
        image: float32 (size, size) image in [0, 1]; padding is 0.
        mask: bool (size, size) breast mask in output space; padding is False.
        lesions: the given lesions in output pixels (they may fall outside when cropped).
        geometry: the steps that produced ``image``, to map points either way.
        laterality: chest-wall side of the *original* image, "L" or "R" (given or inferred).
    """

    image: np.ndarray
    mask: np.ndarray
    lesions: tuple[Lesion, ...]
    geometry: Geometry
    laterality: str


def _as_points(xy: np.ndarray) -> np.ndarray:
    points = np.asarray(xy, dtype=np.float64)
    if points.ndim == 0 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2) as (x, y); got shape {points.shape}")
    return points


def _check_image(image: np.ndarray) -> np.ndarray:
    """The image as float32, or a ValueError saying why it cannot be a mammogram."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"expected a greyscale (H, W) image; got shape {array.shape}")
    if min(array.shape) < MIN_SIDE:
        raise ValueError(f"image of shape {array.shape} is too small: both sides must be "
                         f">= {MIN_SIDE} pixels")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ValueError(f"expected a real-valued image; got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("image holds NaN or infinite values")
    if high - low <= 1e-6:
        raise ValueError(f"image is constant (every pixel is {low:g}): there is no breast to find")
    return array


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) * (255.0 / max(high - low, 1e-12))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _odd(n: float) -> int:
    return max(3, int(n) // 2 * 2 + 1)


def _largest_filled_component(binary: np.ndarray) -> np.ndarray:
    """The largest connected component of a uint8 mask, with its holes filled."""
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.zeros_like(binary)
    if contours:
        largest = max(contours, key=cv2.contourArea)
        cv2.drawContours(out, [largest], -1, 1, thickness=cv2.FILLED)
    return out


def _working_mask(image: np.ndarray) -> np.ndarray | None:
    """The breast mask of a downsampled copy (uint8 0/1), or None when segmentation fails."""
    height, width = image.shape
    factor = min(1.0, WORKING_SIDE / max(height, width))
    small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    low, high = float(small.min()), float(small.max())
    if high - low < MIN_RELATIVE_CONTRAST * max(abs(low), abs(high), 1e-12):
        return None
    # Median blur removes film grain and scanner dust that would bridge label and breast.
    grey = cv2.medianBlur(_to_uint8(small), 5)
    otsu, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    background = float(np.median(grey[grey <= otsu]))
    threshold = background + THRESHOLD_FRACTION * (otsu - background)
    binary = (grey > threshold).astype(np.uint8)
    # Opening cuts thin bridges (film edges, tape) joining labels to the breast, so the
    # largest component is the breast alone; closing then smooths the skin line.
    radius = max(small.shape) / WORKING_SIDE
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(15 * radius),) * 2)
    opened = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    if not opened.any():
        opened = binary  # a breast thinner than the kernel: keep the raw threshold
    closed = cv2.morphologyEx(opened, cv2.MORPH_CLOSE, kernel)
    mask = _largest_filled_component(closed)
    if mask.sum() < MIN_MASK_FRACTION * mask.size:
        return None
    return mask


def breast_mask(image: np.ndarray) -> np.ndarray:
    """Segment the breast of a mammogram (bright tissue on a dark background).

    Thresholds a downsampled copy between the background level and Otsu's threshold,
    opens, keeps the largest connected component (dropping film labels, markers and
    scanner artefacts), closes and fills holes, then resizes the mask back.

    Args:
        image: greyscale (H, W) image, bright = dense.

    Returns:
        Bool (H, W) mask, never empty: when no breast can be separated (a nearly
        uniform image, or only specks above the threshold) it is the whole image.
    """
    image = _check_image(image)
    small = _working_mask(image)
    if small is None:
        return np.ones(image.shape, dtype=bool)
    height, width = image.shape
    # Linear interpolation of the 0/1 mask, cut at 0.5, gives a smooth full-size skin line.
    full = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    mask = full >= 0.5
    return mask if mask.any() else np.ones(image.shape, dtype=bool)


def infer_laterality(image: np.ndarray, mask: np.ndarray) -> str:
    """Guess which side of the image holds the chest wall.

    The breast is thickest, and so brightest, at the chest wall, and the pectoral muscle
    lies there too: the half of the breast's bounding box holding more tissue intensity
    is the chest-wall side.

    Args:
        image: greyscale (H, W) image, bright = dense.
        mask: bool (H, W) breast mask.

    Returns:
        "L" when the chest wall is on the left edge, "R" when on the right (ties give "L").
    """
    image = np.asarray(image, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if image.shape != mask.shape:
        raise ValueError(f"image shape {image.shape} and mask shape {mask.shape} differ")
    columns = np.flatnonzero(mask.any(axis=0))
    if columns.size == 0:
        raise ValueError("the mask is empty: there is no breast to orient")
    x0, x1 = int(columns[0]), int(columns[-1]) + 1
    # Shift so the background reads 0 even for images that are not in [0, 1].
    weights = np.where(mask, image - float(image.min()), 0.0)[:, x0:x1]
    middle = (x1 - x0) / 2
    profile = weights.sum(axis=0)
    centres = np.arange(x1 - x0) + 0.5
    left = float(profile[centres < middle].sum())
    right = float(profile[centres > middle].sum())
    return "R" if right > left else "L"


class MammoPreprocessor:
    """Segment, crop, orient, resize, pad and normalise mammograms (fit / transform).

    Example:
        >>> prep = MammoPreprocessor(MammoConfig(size=256)).fit()
        >>> result = prep.transform(image, laterality="R", lesions=record.lesions)
    """

    def __init__(self, config: MammoConfig | None = None) -> None:
        self.config = config or MammoConfig()

    def fit(self, images: Iterable[np.ndarray] = ()) -> MammoPreprocessor:
        """Learn nothing and return self.

        Every step is per image: intensities are normalised by each film's own breast
        percentiles, because exposure and scanner differ from film to film. The method
        exists so the preprocessor fits the same fit/transform pipelines as the stain
        normalisers, and ``images`` is not read.
        """
        del images
        return self

    def transform(self, image: np.ndarray, *, laterality: str = "",
                  lesions: Sequence[Lesion] = ()) -> MammoResult:
        """Preprocess one mammogram.

        Args:
            image: greyscale (H, W) image, bright = dense (float in [0, 1] from
                ``radpath.data.io.read_image``; any real scale works).
            laterality: chest-wall side of the image, "L" or "R" (the breast side under
                the standard display); "" infers it from the image.
            lesions: lesion circles in original pixels, mapped into the output.

        Returns:
            The output image, its breast mask, the mapped lesions and the geometry.

        Raises:
            ValueError: for a non-2-D, tiny, non-finite or constant image, or an unknown
                laterality.
        """
        cfg = self.config
        image = _check_image(image)
        side = _check_laterality(laterality)
        mask = breast_mask(image)
        side = side or infer_laterality(image, mask)
        y0, x0, y1, x1 = _crop_box(mask, cfg.crop_margin) if cfg.crop else (0, 0, *image.shape)
        flipped = cfg.flip_to != "none" and side != cfg.flip_to
        crop = image[y0:y1, x0:x1]
        crop_mask = mask[y0:y1, x0:x1].astype(np.float32)
        if flipped:
            crop, crop_mask = crop[:, ::-1], crop_mask[:, ::-1]
        scale = cfg.size / max(crop.shape)
        resized, resized_mask = _resize(crop, scale), _resize(crop_mask, scale) >= 0.5
        if not resized_mask.any():
            resized_mask[:] = True  # a mask thinner than one output pixel: use all of it
        resized = self._normalise(resized, resized_mask)
        output_side = cfg.flip_to if flipped else side
        pad = _pad_offsets(resized.shape, cfg.size, chest_wall=output_side)
        geometry = Geometry(original_shape=(image.shape[0], image.shape[1]),
                            crop_box=(y0, x0, y1, x1), flipped=flipped, scale=scale, pad=pad,
                            output_size=cfg.size)
        return MammoResult(image=_paste(resized, cfg.size, pad, 0.0),
                           mask=_paste(resized_mask, cfg.size, pad, False),
                           lesions=tuple(geometry.lesion_to_output(x) for x in lesions),
                           geometry=geometry, laterality=side)

    def _normalise(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Percentile-normalise over breast pixels, optionally CLAHE, zero the background."""
        cfg = self.config
        low, high = np.percentile(image[mask], [cfg.low_percentile, cfg.high_percentile])
        if high - low <= 1e-6:
            # A flat breast (e.g. a saturated film): fall back to the full range.
            low, high = float(image.min()), float(image.max())
        out = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0).astype(np.float32)
        if cfg.segment:
            out[~mask] = 0.0
        if cfg.clahe:
            out = _clahe(out, cfg.clahe_clip, cfg.clahe_grid)
            if cfg.segment:
                out[~mask] = 0.0  # CLAHE lifts dark tiles; keep the background at 0
        return out


def _check_laterality(laterality: str) -> str:
    side = laterality.strip().upper()
    if side not in ("", "L", "R"):
        raise ValueError(f"laterality must be 'L', 'R' or '' (infer); got {laterality!r}")
    return side


def _crop_box(mask: np.ndarray, margin: float) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    pad = round(margin * max(mask.shape))
    height, width = mask.shape
    return (max(0, int(rows[0]) - pad), max(0, int(cols[0]) - pad),
            min(height, int(rows[-1]) + 1 + pad), min(width, int(cols[-1]) + 1 + pad))


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    # fx/fy (not dsize) make OpenCV map with exactly ``scale`` on both axes, so the
    # recorded geometry is exact; the long side comes out as round(long * scale) == size.
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), None, fx=scale, fy=scale,
                      interpolation=interpolation)


def _pad_offsets(shape: tuple[int, ...], size: int, *, chest_wall: str) -> tuple[int, int]:
    """(top, left) padding: centred vertically, horizontally away from the chest wall."""
    spare_y, spare_x = size - shape[0], size - shape[1]
    return spare_y // 2, (spare_x if chest_wall == "R" else 0)


def _paste(content: np.ndarray, size: int, pad: tuple[int, int], fill: float | bool) -> np.ndarray:
    out = np.full((size, size), fill, dtype=content.dtype)
    height, width = min(content.shape[0], size), min(content.shape[1], size)
    out[pad[0]:pad[0] + height, pad[1]:pad[1] + width] = content[:height, :width]
    return out


def _clahe(image: np.ndarray, clip: float, grid: int) -> np.ndarray:
    # 16-bit keeps the normalised intensities' precision through OpenCV's CLAHE.
    as_uint16 = np.round(image * 65535.0).astype(np.uint16)
    equalised = cv2.createCLAHE(clipLimit=clip, tileGridSize=(grid, grid)).apply(as_uint16)
    return equalised.astype(np.float32) / 65535.0
