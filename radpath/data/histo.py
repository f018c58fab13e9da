"""Histopathology preprocessing on uint8 RGB arrays of shape (H, W, 3).

Four pieces, each usable alone:

* :func:`tissue_mask` — which pixels are tissue rather than white glass;
* :func:`tile_image` — a regular grid of tiles, keeping those with enough tissue, and
  :func:`most_tissue_rich` — the richest of them, spread over the image when tied;
* :class:`StainNormalizer` — Macenko or Reinhard normalisation (torchstain, NumPy backend)
  behind a scikit-learn style ``fit`` / ``transform``, with a guarded fallback: stain
  normalisers crash or return NaN on background-only or single-colour tiles, so
  ``transform`` never raises on such a tile and returns it unchanged with the reason;
* :func:`hed_jitter` — HED stain augmentation (Tellez et al. 2018).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import pydantic
from skimage.color import hed2rgb, hed_from_rgb
from skimage.filters import threshold_otsu

StainMethod = Literal["macenko", "reinhard", "none"]
STAIN_METHODS: tuple[str, ...] = ("macenko", "reinhard", "none")

# Otsu on saturation adapts to the slide, but on a tile that is all tissue it would split
# tissue in two (pale stroma against nuclei); bounding it keeps pale tissue as tissue and
# tinted glass as background.
_SATURATION_BOUNDS = (0.05, 0.15)
# cv2's saturation is unstable on nearly black pixels ((3, 0, 1) has S = 1), which are
# pen marks or slide edges, not tissue.
_MIN_VALUE = 30
# A pixel whose every channel exceeds this is glass, however tinted the illumination.
_GLASS_LEVEL = 230
# Cleanup removes specks and fills holes smaller than this fraction of the image.
_CLEANUP_FRACTION = 5e-4
# Successive multiples of the golden ratio, modulo 1, fill [0, 1) evenly at any length.
_GOLDEN = (5 ** 0.5 - 1) / 2

# torchstain's Macenko defaults: transmitted light intensity, angle percentile, and the
# optical-density floor below which a pixel counts as transparent.
_MACENKO_IO = 240
_MACENKO_ALPHA = 1
_MACENKO_BETA = 0.15
# Fewer optically dense pixels than this give no meaningful 3x3 covariance.
_MIN_OD_PIXELS = 64
# Stain vectors more parallel than this (cosine) mean one colour only: no H/E separation.
_MAX_STAIN_COSINE = 0.99
_MIN_CONCENTRATION = 1e-3
# A tile whose channels all vary by less than this (grey levels) is a constant colour.
_MIN_COLOUR_STD = 1.0


class HistoConfig(pydantic.BaseModel):
    """Histopathology preprocessing settings.

    Attributes:
        tile_size: side of a square tile, in pixels of the source image.
        stride: step between tiles; ``None`` means ``tile_size`` (no overlap).
        min_tissue: fraction of tissue pixels a tile needs to be kept.
        stain_method: stain normalisation applied to each tile.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    tile_size: int = pydantic.Field(224, gt=0)
    stride: int | None = pydantic.Field(None, gt=0)
    scale: float = pydantic.Field(1.0, gt=0.0, le=1.0, description="resize factor applied "
                                  "before tiling (0.25: quarter resolution, more tissue a tile)")
    min_tissue: float = pydantic.Field(0.5, ge=0.0, le=1.0)
    stain_method: StainMethod = "macenko"

    @property
    def step(self) -> int:
        """The stride actually used: ``stride``, or ``tile_size`` when unset."""
        return self.stride if self.stride is not None else self.tile_size


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", type(rgb).__name__)
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB array, got dtype {rgb.dtype}")


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Which pixels are tissue: saturated (stained) rather than white, grey or black.

    Thresholds the HSV saturation at Otsu's level, bounded to [0.05, 0.15] so that both a
    tile that is all tissue and a slide that is mostly glass come out right; pixels with
    every channel above 230 (glass) or all channels below 30 (pen, slide edge) are never
    tissue. Then removes specks and fills small holes (each up to 0.05 % of the image).
    Pale, nearly grey tissue under tinted illumination may be missed.

    Args:
        rgb: uint8 RGB image.

    Returns:
        Boolean mask of shape (H, W), True on tissue.
    """
    _check_rgb(rgb)
    hsv = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2HSV)
    saturation = hsv[..., 1].astype(np.float32) / 255.0
    low, high = _SATURATION_BOUNDS
    # Otsu needs two levels; a constant image is background unless strongly saturated.
    otsu = threshold_otsu(saturation) if np.ptp(saturation) > 0 else high
    mask = ((saturation > np.clip(otsu, low, high)) & (hsv[..., 2] >= _MIN_VALUE)
            & (rgb.min(axis=2) <= _GLASS_LEVEL))
    max_size = max(1, int(_CLEANUP_FRACTION * mask.size))
    mask = _drop_small(mask, max_size)
    return ~_drop_small(~mask, max_size)


def _drop_small(mask: np.ndarray, max_size: int) -> np.ndarray:
    """``mask`` without its 8-connected components of ``max_size`` pixels or fewer."""
    # cv2 rather than skimage.morphology, whose size arguments changed name in 0.26.
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] > max_size
    keep[0] = False  # label 0 is everything outside the mask
    return keep[labels]


@dataclass(frozen=True, eq=False)
class Tile:
    """One tile cut from a source image.

    Attributes:
        x: column of the top-left corner, in pixels of the source image.
        y: row of the top-left corner, in pixels of the source image.
        image: the tile, uint8 RGB of shape (tile_size, tile_size, 3).
        tissue_fraction: fraction of the tile's pixels that are tissue.
    """

    x: int
    y: int
    image: np.ndarray
    tissue_fraction: float


def _pad_to(array: np.ndarray, height: int, width: int, value: int | bool) -> np.ndarray:
    pad_h, pad_w = max(0, height - array.shape[0]), max(0, width - array.shape[1])
    if not pad_h and not pad_w:
        return array
    widths = [(0, pad_h), (0, pad_w)] + [(0, 0)] * (array.ndim - 2)
    return np.pad(array, widths, constant_values=value)


def tile_image(rgb: np.ndarray, *, tile_size: int, stride: int | None = None,
               min_tissue: float = 0.5, mask: np.ndarray | None = None) -> list[Tile]:
    """Cut ``rgb`` into a regular grid of square tiles and keep those with enough tissue.

    Tiles start at multiples of ``stride`` and lie wholly inside the image; a strip at the
    right or bottom edge narrower than a tile is left out. An image smaller than a tile in
    either dimension is first padded with white (background) at its right and bottom, so
    it yields one tile in that dimension; padding never counts as tissue.

    Args:
        rgb: uint8 RGB image.
        tile_size: side of a tile, in pixels.
        stride: step between tiles; ``None`` means ``tile_size``.
        min_tissue: keep tiles whose tissue fraction is at least this.
        mask: tissue mask of the whole image; computed with :func:`tissue_mask` when
            ``None`` (once per image, so the threshold is the slide's, not each tile's).

    Returns:
        The kept tiles, row by row, top-left first.
    """
    _check_rgb(rgb)
    step = tile_size if stride is None else stride
    if tile_size <= 0 or step <= 0:
        raise ValueError(f"tile_size and stride must be positive, got {tile_size} and {step}")
    if mask is None:
        mask = tissue_mask(rgb)
    elif mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    image = _pad_to(rgb, tile_size, tile_size, 255)
    tissue = _pad_to(mask.astype(bool), tile_size, tile_size, False)
    height, width = tissue.shape
    tiles = []
    for y in range(0, height - tile_size + 1, step):
        for x in range(0, width - tile_size + 1, step):
            fraction = float(tissue[y:y + tile_size, x:x + tile_size].mean())
            if fraction >= min_tissue:
                tiles.append(Tile(x, y, image[y:y + tile_size, x:x + tile_size].copy(),
                                  fraction))
    return tiles


def most_tissue_rich(tiles: list[Tile], count: int) -> list[Tile]:
    """The ``count`` tiles with the largest tissue fraction, richest first.

    Ties are common (every tile inside a dense core is all tissue), and a plain sort would
    break them in raster order, keeping the top rows of a dense image and none of the rest.
    Equally rich tiles are taken instead in a golden-ratio order of their raster index,
    which spreads any number of them evenly over the image (and is deterministic).
    """
    if count <= 0:
        raise ValueError(f"count must be positive, got {count}")
    spread = [(index * _GOLDEN) % 1.0 for index in range(len(tiles))]
    order = sorted(range(len(tiles)), key=lambda i: (-tiles[i].tissue_fraction, spread[i]))
    return [tiles[i] for i in order[:count]]


@dataclass(frozen=True, eq=False)
class StainResult:
    """The outcome of normalising one image.

    Attributes:
        image: uint8 RGB; the input itself when normalisation fell back.
        normalised: whether the stain normalisation was applied.
        reason: empty when normalised, else why it fell back.
    """

    image: np.ndarray
    normalised: bool
    reason: str = ""


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel optical density, (N, 3), as torchstain's Macenko computes it."""
    return -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1) / _MACENKO_IO)


def _stain_problem(stain_matrix: np.ndarray, max_concentrations: np.ndarray) -> str:
    """Why a Macenko estimate is unusable, or "" when it is fine."""
    if not (np.all(np.isfinite(stain_matrix)) and np.all(np.isfinite(max_concentrations))):
        return "degenerate stain matrix (non-finite)"
    h, e = stain_matrix[:, 0], stain_matrix[:, 1]
    cosine = abs(float(h @ e)) / max(float(np.linalg.norm(h) * np.linalg.norm(e)), 1e-12)
    if cosine > _MAX_STAIN_COSINE:
        return "degenerate stain matrix (one colour only)"
    if np.any(max_concentrations < _MIN_CONCENTRATION):
        return "degenerate stain matrix (no stain)"
    return ""


def _od_problem(rgb: np.ndarray) -> str:
    """Why Macenko cannot estimate stains from ``rgb``: too few optically dense pixels."""
    dense = int(np.all(_optical_density(rgb) >= _MACENKO_BETA, axis=1).sum())
    if dense < _MIN_OD_PIXELS:
        return f"too few stained pixels for macenko ({dense} < {_MIN_OD_PIXELS})"
    return ""


def _raise_on_nan() -> contextlib.AbstractContextManager:
    """NumPy raising where it would make NaN or inf, so a would-be NaN image falls back.

    This covers a NaN cast to uint8, which torchstain's Reinhard does silently; underflow
    to zero is harmless and stays quiet.
    """
    return np.errstate(divide="raise", invalid="raise", over="raise", under="ignore")


def _content_problem(rgb: np.ndarray, min_tissue: float) -> str:
    """Why ``rgb`` cannot be stain-normalised at all, or "" when it can be tried."""
    if float(rgb.reshape(-1, 3).std(axis=0).max()) < _MIN_COLOUR_STD:
        return "constant colour"
    fraction = float(tissue_mask(rgb).mean())
    if fraction < min_tissue:
        return f"too little tissue ({fraction:.1%} < {min_tissue:.0%})"
    return ""


_STAIN_SAMPLE_PIXELS = 256 * 256


class StainNormalizer:
    """Stain normalisation to a reference image, fit/transform style.

    ``transform`` never raises on a degenerate tile and never returns NaN: when the tile is
    background, a single colour, or makes torchstain fail, it returns the tile unchanged
    with ``normalised=False`` and the reason, so a pipeline can count fallbacks.

    Args:
        method: ``"macenko"``, ``"reinhard"`` or ``"none"`` (a pass-through whose results
            say ``normalised=False``).
        min_tissue: fraction of tissue pixels (by :func:`tissue_mask`) an image needs to
            be normalised, or to serve as a reference.
    """

    def __init__(self, method: str = "macenko", *, min_tissue: float = 0.1) -> None:
        if method not in STAIN_METHODS:
            raise ValueError(f"unknown stain method {method!r}; choose one of "
                             f"{', '.join(STAIN_METHODS)}")
        if not 0.0 <= min_tissue <= 1.0:
            raise ValueError(f"min_tissue must be in [0, 1], got {min_tissue}")
        self.method = method
        self.min_tissue = min_tissue
        self._normalizer: Any = None

    @property
    def fitted(self) -> bool:
        return self.method == "none" or self._normalizer is not None

    def fit(self, reference: np.ndarray) -> StainNormalizer:
        """Learn the reference stain appearance.

        Args:
            reference: uint8 RGB image with enough tissue.

        Returns:
            ``self``.

        Raises:
            ValueError: the reference has too little tissue or a degenerate stain matrix.
        """
        _check_rgb(reference)
        if self.method == "none":
            return self
        problem = _content_problem(reference, self.min_tissue)
        if not problem and self.method == "macenko":
            problem = _od_problem(reference)
        normalizer = _torchstain(self.method)
        if not problem:
            try:
                with _raise_on_nan():
                    _fit_torchstain(normalizer, self.method, reference)
            except (ArithmeticError, ValueError, IndexError) as exc:
                problem = f"torchstain failed ({type(exc).__name__}: {exc})"
        if not problem and self.method == "macenko":
            problem = _stain_problem(normalizer.HERef, normalizer.maxCRef)
        if problem:
            raise ValueError(f"cannot fit {self.method} to this reference: {problem}")
        self._normalizer = normalizer
        return self

    def transform(self, rgb: np.ndarray) -> StainResult:
        """Normalise ``rgb`` to the reference, or fall back to it unchanged.

        Args:
            rgb: uint8 RGB image or tile.

        Returns:
            The normalised image, or the input with ``normalised=False`` and the reason.

        Raises:
            ValueError: ``rgb`` is not a uint8 (H, W, 3) array.
            RuntimeError: called before :meth:`fit`.
        """
        _check_rgb(rgb)
        if self.method == "none":
            return StainResult(rgb, False, "stain normalisation is off (method 'none')")
        if self._normalizer is None:
            raise RuntimeError("StainNormalizer.transform called before fit()")
        problem = _content_problem(rgb, self.min_tissue)
        if problem:
            return StainResult(rgb, False, problem)
        try:
            with _raise_on_nan():
                out = (self._macenko(rgb) if self.method == "macenko"
                       else self._normalizer.normalize(rgb).astype(np.float64))
        except _Degenerate as exc:
            return StainResult(rgb, False, str(exc))
        except (ArithmeticError, ValueError, IndexError) as exc:  # LinAlgError is a ValueError
            return StainResult(rgb, False, f"{self.method} failed ({type(exc).__name__}: {exc})")
        if out.shape != rgb.shape or not np.all(np.isfinite(out)):
            return StainResult(rgb, False, "non-finite output")
        return StainResult(np.clip(np.rint(out), 0, 255).astype(np.uint8), True, "")

    def _macenko(self, rgb: np.ndarray) -> np.ndarray:
        """Macenko with the tile's own stain estimate checked before it is used.

        torchstain's ``normalize`` casts to uint8 internally, which would hide NaN and
        offers no look at the tile's stain matrix; so torchstain estimates the tile's stains
        (its ``fit``) and the five-line reconstruction is done here, in float.
        """
        problem = _od_problem(rgb)
        if problem:
            raise _Degenerate(problem)
        estimate = _torchstain("macenko")
        _fit_torchstain(estimate, "macenko", _stain_sample(rgb))
        problem = _stain_problem(estimate.HERef, estimate.maxCRef)
        if problem:
            raise _Degenerate(problem)
        density = _optical_density(rgb).T
        # The least-squares concentrations of a full-rank 3x2 stain matrix are its
        # pseudo-inverse times the densities: one small matrix product instead of lstsq.
        concentrations = np.linalg.pinv(estimate.HERef) @ density
        scale = estimate.maxCRef / self._normalizer.maxCRef
        concentrations /= scale[:, np.newaxis]
        out = _MACENKO_IO * np.exp(-self._normalizer.HERef @ concentrations)
        return np.minimum(out, 255).T.reshape(rgb.shape)

    def state(self) -> dict[str, Any]:
        """The fitted parameters as plain lists and numbers, for a run's record."""
        if not self.fitted:
            raise RuntimeError("StainNormalizer.state called before fit()")
        state: dict[str, Any] = {"method": self.method, "min_tissue": self.min_tissue}
        if self.method == "macenko":
            state["stain_matrix"] = np.asarray(self._normalizer.HERef).tolist()
            state["max_concentrations"] = np.asarray(self._normalizer.maxCRef).tolist()
        elif self.method == "reinhard":
            state["lab_means"] = np.asarray(self._normalizer.target_means).tolist()
            state["lab_stds"] = np.asarray(self._normalizer.target_stds).tolist()
        return state

    @classmethod
    def builtin_reference(cls, *, min_tissue: float = 0.1) -> StainNormalizer:
        """Macenko fitted to torchstain's built-in reference stains, for when no image is given.

        Reinhard has no such default: it needs a reference image's colour statistics.
        """
        self = cls("macenko", min_tissue=min_tissue)
        self._normalizer = _torchstain("macenko")  # its constructor sets the reference stains
        return self

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StainNormalizer:
        """A fitted normaliser rebuilt from :meth:`state`'s output."""
        needed = {"macenko": ("stain_matrix", "max_concentrations"),
                  "reinhard": ("lab_means", "lab_stds")}.get(state.get("method", ""), ())
        missing = [key for key in ("method", *needed) if key not in state]
        if missing:
            raise ValueError(f"stain normaliser state lacks {', '.join(missing)}")
        self = cls(state["method"], min_tissue=float(state.get("min_tissue", 0.1)))
        if self.method == "macenko":
            self._normalizer = _torchstain("macenko")
            self._normalizer.HERef = np.asarray(state["stain_matrix"], dtype=np.float64)
            self._normalizer.maxCRef = np.asarray(state["max_concentrations"], dtype=np.float64)
        elif self.method == "reinhard":
            self._normalizer = _torchstain("reinhard")
            self._normalizer.target_means = np.asarray(state["lab_means"], dtype=np.float32)
            self._normalizer.target_stds = np.asarray(state["lab_stds"], dtype=np.float32)
        return self


def _stain_sample(rgb: np.ndarray, max_pixels: int = _STAIN_SAMPLE_PIXELS) -> np.ndarray:
    """A regular subsample of ``rgb`` with at most about ``max_pixels`` pixels.

    Stain vectors come from angle percentiles and the maximum concentration from the 99th
    percentile: both are stable on a subsample, and the estimate then costs the same for a
    tile and a whole field of view.
    """
    step = max(1, int(np.ceil(np.sqrt(rgb.shape[0] * rgb.shape[1] / max_pixels))))
    return rgb[::step, ::step]


class _Degenerate(Exception):
    """Internal: a tile the stain estimate cannot handle; the message is the reason."""


def _fit_torchstain(normalizer: Any, method: str, rgb: np.ndarray) -> None:
    if method == "macenko":
        normalizer.fit(rgb, Io=_MACENKO_IO, alpha=_MACENKO_ALPHA, beta=_MACENKO_BETA)
    else:
        normalizer.fit(rgb)


def _torchstain(method: str) -> Any:
    # Imported here so that importing radpath.data stays light.
    import torchstain

    if method == "macenko":
        return torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    return torchstain.normalizers.ReinhardNormalizer(backend="numpy")


def hed_jitter(rgb: np.ndarray, rng: np.random.Generator, *, sigma: float = 0.03,
               bias: float = 0.03) -> np.ndarray:
    """HED stain augmentation (Tellez et al., 2018).

    Deconvolves the image into haematoxylin, eosin and DAB (Ruifrok–Johnston), scales each
    channel by ``alpha ~ U(1 - sigma, 1 + sigma)`` and shifts it by ``beta ~ U(-bias, bias)``,
    then recombines. With ``sigma = bias = 0`` the output equals the input up to rounding.

    Args:
        rgb: uint8 RGB image.
        rng: the random generator; a seeded one makes the result reproducible.
        sigma: half-width of the multiplicative perturbation.
        bias: half-width of the additive perturbation.

    Returns:
        The augmented uint8 RGB image.
    """
    _check_rgb(rgb)
    if sigma < 0 or bias < 0:
        raise ValueError(f"sigma and bias must be >= 0, got {sigma} and {bias}")
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-bias, bias, size=3)
    hed = _rgb2hed(rgb) * alpha + beta
    out = np.nan_to_num(hed2rgb(hed), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def _rgb2hed(rgb: np.ndarray) -> np.ndarray:
    """skimage's ``rgb2hed`` without its clamp of negative stain amounts at zero.

    The clamp makes ``hed2rgb(rgb2hed(x))`` differ from ``x`` by up to ~100 grey levels on
    colours outside the H-E-DAB cone, so an augmentation of strength zero would still
    change the image; unclamped, the round trip is exact (the matrices are inverses).
    """
    # Same Beer-Lambert transform and 1e-6 floor as skimage.color.separate_stains.
    scaled = np.maximum(rgb.astype(np.float64) / 255.0, 1e-6)
    return (np.log(scaled) / np.log(1e-6)) @ hed_from_rgb
