"""Open a whole-slide image and read it region by region, never whole.

OpenSlide 4 (``openslide-python`` with the ``openslide-bin`` wheel) reads SVS, generic tiled
TIFF, NDPI, MRXS, SCN and DICOM WSI. ``wsidicom`` is the fallback for DICOM series OpenSlide
refuses (a series split over files it cannot group, or a transfer syntax it lacks). Both
are imported lazily, so ``import radpath`` stays light.

A DICOM WSI is a folder of files (one per level); a :class:`Slide` opens it from the folder
or from any file in it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from radpath.errors import ImageReadError

SLIDE_SUFFIXES = (".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".svslide")
DICOM_SUFFIXES = (".dcm", ".dicom")
BACKENDS = ("openslide", "wsidicom")
# Magnification by microns per pixel when a slide states only one of them (Aperio's scale).
_MPP_AT_40X = 0.25
# A thumbnail is read in bands of about this many level pixels (12 MB of RGBA).
_THUMBNAIL_BAND_PIXELS = 3_000_000


class _Backend(Protocol):
    level_dimensions: Sequence[tuple[int, int]]
    level_downsamples: Sequence[float]
    mpp: float | None
    objective_power: float | None
    vendor: str

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray: ...

    def close(self) -> None: ...


class _OpenSlideBackend:
    def __init__(self, path: Path) -> None:
        import openslide

        self._slide = openslide.OpenSlide(str(path))
        self.level_dimensions = tuple(self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        props = self._slide.properties
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR, "") or "generic"
        self.mpp = _positive(props.get(openslide.PROPERTY_NAME_MPP_X))
        self.objective_power = _positive(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        rgba = np.asarray(self._slide.read_region((x, y), level, (width, height)))
        return _rgba_to_rgb(rgba)

    def close(self) -> None:
        self._slide.close()


class _WsiDicomBackend:
    def __init__(self, path: Path) -> None:
        import logging

        import wsidicom

        folder = path if path.is_dir() else path.parent
        # wsidicom logs the study and series UIDs of files it sets aside: DICOM identifiers
        # that must never reach a log.
        logging.getLogger("wsidicom").setLevel(logging.ERROR)
        self._slide = wsidicom.WsiDicom.open(folder)
        levels = list(self._slide.levels)
        self._levels = [level.level for level in levels]
        self.level_dimensions = tuple((lv.size.width, lv.size.height) for lv in levels)
        base = self.level_dimensions[0][0]
        self.level_downsamples = tuple(base / w for w, _ in self.level_dimensions)
        self.vendor = "dicom"
        # wsidicom's ``mpp`` is a SizeMm holding microns per pixel (despite the name).
        self.mpp = _positive(getattr(self._slide.mpp, "width", None))
        self.objective_power = None

    def read(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        # wsidicom takes the region's origin in the level's own pixels, OpenSlide in level 0's.
        scale = self.level_downsamples[level]
        origin = (round(x / scale), round(y / scale))
        image = self._slide.read_region(origin, self._levels[level], (width, height))
        return np.asarray(image.convert("RGB"))

    def close(self) -> None:
        self._slide.close()


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _rgba_to_rgb(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's premultiplied RGBA over white: transparent (no scan) reads as background."""
    import cv2

    # cv2's SIMD loops, not numpy's strided copies: this runs once per patch.
    alpha = cv2.extractChannel(rgba, 3)
    if cv2.minMaxLoc(alpha)[0] >= 255:
        return cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    rgb = cv2.cvtColor(rgba, cv2.COLOR_RGBA2RGB)
    missing = cv2.subtract(np.full_like(alpha, 255), alpha)
    return cv2.add(rgb, cv2.merge([missing, missing, missing]))  # saturates at 255


@dataclass(frozen=True)
class SlideInfo:
    """What a slide's metadata says, and where each value came from."""

    width: int
    height: int
    levels: int
    mpp: float | None
    mpp_source: str
    magnification: float | None
    vendor: str
    backend: str


class Slide:
    """A whole-slide image, read lazily region by region.

    Args:
        path: the slide file, or the folder (or any file) of a DICOM WSI series.
        mpp: microns per level-0 pixel, overriding (or standing in for) the metadata.
        backend: ``openslide`` or ``wsidicom``; None tries OpenSlide, then wsidicom for DICOM.

    Raises:
        ImageReadError: naming the file, when it is missing or no reader can open it.
    """

    def __init__(self, path: str | Path, *, mpp: float | None = None,
                 backend: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise ImageReadError(self.path, "slide not found")
        if backend is not None and backend not in BACKENDS:
            raise ImageReadError(self.path, f"unknown slide backend {backend!r}; expected one "
                                 f"of {', '.join(BACKENDS)}")
        if mpp is not None and not mpp > 0:
            raise ImageReadError(self.path, f"mpp override must be > 0, got {mpp!r}")
        self.backend, self._reader = _open(self.path, backend)
        self._mpp_override = mpp
        self._ycbcr = _jfif_labelled_rgb(self.path)

    # -- metadata -------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)``."""
        return self._reader.level_dimensions[0]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return tuple(self._reader.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return tuple(self._reader.level_downsamples)

    @property
    def level_count(self) -> int:
        return len(self._reader.level_dimensions)

    @property
    def mpp(self) -> float | None:
        """Microns per level-0 pixel: the override, else the metadata, else derived from the
        objective power (0.25 µm/px at 40x), else None."""
        if self._mpp_override is not None:
            return self._mpp_override
        if self._reader.mpp is not None:
            return self._reader.mpp
        power = self._reader.objective_power
        return _MPP_AT_40X * 40.0 / power if power else None

    def require_mpp(self) -> float:
        """:attr:`mpp`, or an error telling the user how to give it."""
        if self.mpp is None:
            raise ImageReadError(self.path, "the slide's metadata gives neither microns per "
                                 "pixel nor objective power; pass the mpp override (--slide-mpp)")
        return self.mpp

    def info(self) -> SlideInfo:
        reader = self._reader
        source = ("override" if self._mpp_override is not None else "metadata" if reader.mpp
                  else "objective power" if reader.objective_power else "unknown")
        mpp = self.mpp
        magnification = reader.objective_power or (_MPP_AT_40X * 40.0 / mpp if mpp else None)
        width, height = self.dimensions
        return SlideInfo(width, height, self.level_count, mpp, source, magnification,
                         reader.vendor, self.backend)

    # -- pixels ---------------------------------------------------------------------------
    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level no coarser than ``downsample`` (so resampling only shrinks)."""
        best = 0
        for level, factor in enumerate(self.level_downsamples):
            if factor <= downsample * (1 + 1e-6):
                best = level
        return best

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """RGB ``(height, width, 3)`` uint8 of the region whose top-left is level-0 ``(x, y)``.

        Areas outside the slide, or never scanned, read as white background.
        """
        if not 0 <= level < self.level_count:
            raise ImageReadError(self.path, f"level {level} does not exist (the slide has "
                                 f"{self.level_count})")
        if width <= 0 or height <= 0:
            raise ImageReadError(self.path, f"region size must be positive, got {width}x{height}")
        region = self._reader.read(int(x), int(y), level, int(width), int(height))
        return _ycbcr_to_rgb(region) if self._ycbcr else region

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """A thumbnail no larger than ``max_side``, and its downsample from level 0.

        Read from the coarsest level at least ``max_side`` on its longer side, in bands of
        rows shrunk one at a time, so memory stays near the thumbnail's own size even when
        the nearest level is large.
        """
        import cv2

        width, height = self.dimensions
        level = self.best_level_for_downsample(max(max(width, height) / max_side, 1.0))
        lw, lh = self.level_dimensions[level]
        scale = min(1.0, max_side / max(lw, lh))
        out_w, out_h = max(1, round(lw * scale)), max(1, round(lh * scale))
        band = max(1, _THUMBNAIL_BAND_PIXELS // lw)
        parts, done = [], 0
        for top in range(0, lh, band):
            rows = min(band, lh - top)
            target = round((top + rows) * out_h / lh) - done
            if target <= 0:
                continue
            region = self._read_level_rows(level, top, lw, rows)
            parts.append(cv2.resize(region, (out_w, target), interpolation=cv2.INTER_AREA)
                         if scale < 1.0 else region)
            done += target
        return np.concatenate(parts, axis=0), width / out_w

    def _read_level_rows(self, level: int, top: int, width: int, rows: int) -> np.ndarray:
        """Rows ``top:top+rows`` of ``level``, whole width (level-0 origin as readers want)."""
        y0 = round(top * self.level_downsamples[level])
        return self.read_region(0, y0, level, width, rows)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open(path: Path, backend: str | None) -> tuple[str, _Backend]:
    is_dicom = path.is_dir() or path.suffix.lower() in DICOM_SUFFIXES
    order = [backend] if backend else (["openslide", "wsidicom"] if is_dicom else ["openslide"])
    reasons = []
    for name in order:
        try:
            return name, _make_backend(name, path)
        except ImportError as exc:
            reasons.append(f"{name} is not installed ({exc.name})")
        except Exception as exc:  # each reader raises its own types; name them all
            reasons.append(f"{name}: {type(exc).__name__}: {_scrub_uids(str(exc))}")
    expected = "a DICOM WSI series" if is_dicom else "a slide in " + ", ".join(SLIDE_SUFFIXES)
    raise ImageReadError(path, f"cannot be read as a whole-slide image (expected {expected}); "
                         + "; ".join(reasons))


_UID = re.compile(r"\b\d+(?:\.\d+){3,}\b")


def _scrub_uids(text: str) -> str:
    """A reader's message without DICOM UIDs (study, series, instance: identifiers)."""
    return _UID.sub("<uid>", text)


def _make_backend(name: str, path: Path) -> _Backend:
    if name == "wsidicom":
        return _WsiDicomBackend(path)
    if path.is_dir():
        path = _first_dicom(path)
    return _OpenSlideBackend(path)


def _jfif_labelled_rgb(path: Path) -> bool:
    """Whether a DICOM WSI's JPEG frames are JFIF (so YCbCr) while the header says RGB.

    Some converters write JFIF JPEG frames under PhotometricInterpretation RGB. Readers that
    trust the header (OpenSlide 4, wsidicom) then return the YCbCr samples as if they were
    RGB: white glass comes out pink. The JPEG standard makes a JFIF stream YCbCr, so the
    stream wins. Checked on the smallest file of the series, whose first frame is tiny.
    """
    if not (path.is_dir() or path.suffix.lower() in DICOM_SUFFIXES):
        return False
    import pydicom
    from pydicom.encaps import generate_frames

    folder = path if path.is_dir() else path.parent
    files = [p for p in folder.iterdir() if p.suffix.lower() in DICOM_SUFFIXES]
    if not files:
        return False
    smallest = min(files, key=lambda p: p.stat().st_size)
    try:
        ds = pydicom.dcmread(smallest)
        if ds.get("PhotometricInterpretation") != "RGB" or not ds.file_meta.TransferSyntaxUID \
                .is_compressed:
            return False
        frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames)))
    except Exception:  # an unreadable header leaves the reader's colours alone
        return False
    head = frame[:256]
    return head[:2] == b"\xff\xd8" and b"JFIF\x00" in head and b"Adobe" not in head


def _ycbcr_to_rgb(region: np.ndarray) -> np.ndarray:
    import cv2

    # OpenCV's YCrCb is JFIF's full-range YCbCr with the chroma planes swapped.
    luma, blue, red = cv2.split(region)
    return cv2.cvtColor(cv2.merge([luma, red, blue]), cv2.COLOR_YCrCb2RGB)


def _first_dicom(folder: Path) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in DICOM_SUFFIXES)
    if not files:
        raise ImageReadError(folder, "folder holds no DICOM (.dcm) file")
    return files[0]
