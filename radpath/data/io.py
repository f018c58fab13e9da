"""Image reading: the one entry point every other module uses to turn a file into pixels.

Formats: DICOM (pydicom, compressed transfer syntaxes through pydicom's decoders and
pylibjpeg), TIFF (tifffile), and PNG, PGM/PPM (P2/P5), JPEG, BMP and anything else
Pillow opens. Every failure is an :class:`~radpath.errors.ImageReadError` that names the
file; no DICOM identifier (patient name or id, dates, accession number, institution, UIDs)
ever reaches an error message or :attr:`ImageData.meta`.

Greyscale images come back as float32 in [0, 1] with bright = dense (MONOCHROME1 and
TIFF "min-is-white" images are inverted); colour images as uint8 RGB.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import tifffile
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from radpath.errors import ImageReadError

# 144 million pixels: ten times a full-field digital mammogram (about 4,700 x 3,000) and
# 576 MB once in float32. It sits below Pillow's own hard limit (2 x
# Image.MAX_IMAGE_PIXELS, about 179 million), so this cap, not Pillow's, is what users meet.
DEFAULT_MAX_PIXELS = 12_000 * 12_000

GREY_PHOTOMETRICS = ("MONOCHROME1", "MONOCHROME2")
# pydicom converts the YBR family to RGB while decoding (its default ``as_rgb=True``).
COLOUR_PHOTOMETRICS = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")

# Tags whose values could identify a person or an exam: scrubbed from every error message.
IDENTIFYING_TAGS = (
    "PatientName", "PatientID", "OtherPatientIDs", "PatientBirthDate", "PatientAddress",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "StudyDate", "SeriesDate", "AcquisitionDate",
    "ContentDate", "StudyID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
)

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# ``.ima``: Siemens' name for its DICOM exports.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
# Exceptions that stop a program on purpose: never turned into a skipped file.
_CONTROL_FLOW = (KeyboardInterrupt, SystemExit, GeneratorExit)
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class ImageData:
    """A decoded image.

    Attributes:
        pixels: greyscale: float32 ``(H, W)`` in [0, 1], bright = dense; colour: uint8
            ``(H, W, 3)`` RGB.
        path: the file read.
        kind: ``"grey"`` or ``"rgb"``.
        bits: the stored bit depth (8 or 16 typically; 12 for a PGM with maxval 4095).
        meta: non-identifying header facts only (format, photometric, transfer syntax,
            laterality, view...). Never a patient name, id, date or institution.
    """

    pixels: np.ndarray
    path: str
    kind: str
    bits: int
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageData:
    """Read any supported image file.

    Args:
        path: the file. Its format is sniffed from its first bytes (DICOM, TIFF), then its
            suffix; anything else is handed to Pillow.
        max_pixels: the largest height x width accepted, checked from the header before
            any pixel is decoded (a guard against decompression bombs).

    Returns:
        The decoded image (for a multi-frame DICOM or multi-page TIFF, the first frame).

    Raises:
        ImageReadError: the file is missing, unreadable, corrupt, too large, constant or of
            an unsupported kind; the message names the file.
    """
    path = _existing_file(path)
    reader = {"dicom": _read_dicom, "tiff": _read_tiff, "pillow": _read_pillow}
    fmt = _format_of(path)
    with _decoder_guard(path, fmt):
        return reader[fmt](path, max_pixels)


def read_dicom_header(path: str | Path) -> pydicom.Dataset:
    """The DICOM header without pixel data.

    The dataset holds identifying tags: never log or print it whole.

    Raises:
        ImageReadError: the file is missing, not DICOM, or its header is corrupt.
    """
    path = _existing_file(path)
    with _decoder_guard(path, "dicom"):
        return _dcmread(path, stop_before_pixels=True)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` read from the header, without decoding the pixels."""
    path = _existing_file(path)
    fmt = _format_of(path)
    with _decoder_guard(path, fmt):
        return _header_size(path, fmt)


def _header_size(path: Path, fmt: str) -> tuple[int, int]:
    if fmt == "dicom":
        ds = _dcmread(path, stop_before_pixels=True)
        return int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if fmt == "tiff":
        try:
            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        except Exception as exc:  # tifffile raises many exception types on corrupt files
            raise ImageReadError(path, f"unreadable TIFF header ({exc})") from exc
    with _open_pillow(path) as image:
        return image.size[1], image.size[0]


# --------------------------------------------------------------------------- shared helpers


@contextmanager
def _decoder_guard(path: Path, fmt: str) -> Iterator[None]:
    """Turn any failure of a third-party decoder into an :class:`ImageReadError`.

    The readers below already name the usual failures. This catches the rest, including
    ``BaseException``s such as the ``PanicException`` of the Rust decoders (pylibjpeg-rle),
    which pass an ``except Exception`` and would otherwise end a whole batch or request.
    """
    try:
        yield
    except (ImageReadError, *_CONTROL_FLOW):
        raise
    except BaseException as exc:
        if type(exc).__name__ == "CancelledError":  # asyncio/anyio cancellation: not ours
            raise
        # A DICOM decoder's message may quote tag values: show only the exception type.
        detail = type(exc).__name__ if fmt == "dicom" else f"{type(exc).__name__}: {exc}"
        raise ImageReadError(path, f"the {fmt} decoder failed on this file ({detail[:200]})"
                             ) from None


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ImageReadError(path, "file not found")
    if not path.is_file():
        raise ImageReadError(path, "not a file")
    return path


def _format_of(path: Path) -> str:
    """``"dicom"``, ``"tiff"`` or ``"pillow"``: magic bytes first, so a wrong suffix is fine."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise ImageReadError(path, f"cannot open the file ({exc.strerror or exc})") from exc
    if head[128:132] == b"DICM" or path.suffix.lower() in DICOM_SUFFIXES:
        return "dicom"
    if head[:4] in _TIFF_MAGICS or path.suffix.lower() in _TIFF_SUFFIXES:
        return "tiff"
    return "pillow"


def _check_size(path: Path, height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise ImageReadError(path, f"zero-size image ({height} x {width} pixels)")
    if height * width > max_pixels:
        raise ImageReadError(path, f"{height} x {width} = {height * width:,} pixels exceeds the "
                                   f"limit of {max_pixels:,} (max_pixels)")


def _check_not_constant(path: Path, array: np.ndarray) -> None:
    """Refuse an image whose pixels are all equal: blank scans and failed exports."""
    flat = array.reshape(-1, array.shape[2]) if array.ndim == 3 else array.reshape(-1, 1)
    first = flat[0]
    if np.array_equal(flat.min(axis=0), first) and np.array_equal(flat.max(axis=0), first):
        value = first.tolist()
        shown = value[0] if len(value) == 1 else tuple(value)
        raise ImageReadError(path, f"constant image (every pixel is {shown}): nothing to learn "
                                   "from")


def _grey(path: Path, raw: np.ndarray, low: float, high: float, *, bits: int,
          invert: bool = False, meta: dict[str, str]) -> ImageData:
    """Scale ``raw`` from ``[low, high]`` into float32 [0, 1], inverting when asked."""
    _check_not_constant(path, raw)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ImageReadError(path, f"no usable intensity range ([{low}, {high}]); expected "
                                   "finite bounds, the upper above the lower")
    pixels = raw.astype(np.float32)
    if not np.isfinite(pixels).all():
        raise ImageReadError(path, "pixel values hold NaN or infinity after decoding (e.g. a "
                                   "NaN or overflowing RescaleSlope); expected finite values")
    pixels -= np.float32(low)
    pixels /= np.float32(high - low)
    np.clip(pixels, 0.0, 1.0, out=pixels)
    if invert:
        np.subtract(1.0, pixels, out=pixels)
    return ImageData(pixels, str(path), "grey", bits, meta)


def _rgb(path: Path, raw: np.ndarray, *, bits: int, meta: dict[str, str]) -> ImageData:
    """Keep the first three channels as uint8 RGB (alpha dropped, deeper samples scaled)."""
    rgb = raw[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.rint(rgb.astype(np.float64) * (255.0 / (2**bits - 1))).astype(np.uint8)
    _check_not_constant(path, rgb)
    return ImageData(np.ascontiguousarray(rgb), str(path), "rgb", bits, meta)


# --------------------------------------------------------------------------- Pillow


@contextmanager
def _open_pillow(path: Path) -> Iterator[Image.Image]:
    """Open lazily (header only) and turn every Pillow failure into an ImageReadError."""
    try:
        with warnings.catch_warnings():
            # The size check against max_pixels replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                yield image
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"{exc} (Pillow's decompression-bomb limit)") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "not an image radpath can read (Pillow does not recognise "
                                   "it; supported: DICOM, TIFF, PNG, PGM, JPEG, BMP)") from exc
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageReadError(path, f"corrupt or truncated image ({exc})") from exc


def _read_pillow(path: Path, max_pixels: int) -> ImageData:
    with _open_pillow(path) as image:
        width, height = image.size
        _check_size(path, height, width, max_pixels)
        image.load()
        meta = {"format": (image.format or "unknown").lower(), "mode": image.mode}
        return _from_pillow(path, image, meta)


def _from_pillow(path: Path, image: Image.Image, meta: dict[str, str]) -> ImageData:
    mode = image.mode
    if mode == "I" or mode.startswith("I;16"):
        raw = np.asarray(image)
        if raw.size and (raw.min() < 0 or raw.max() > 65535):
            raise ImageReadError(path, "32-bit integer image with values outside 0..65535 is "
                                       "not supported")
        # Pillow already stretches a PGM maxval such as 4095 to the full 16-bit range.
        return _grey(path, raw, 0, 65535, bits=_pnm_bits(path, image) or 16, meta=meta)
    if mode in ("1", "L", "LA", "La"):
        raw = np.asarray(image.convert("L"))
        return _grey(path, raw, 0, 255, bits=_pnm_bits(path, image) or 8, meta=meta)
    if mode == "F":
        raise ImageReadError(path, "floating-point images are not supported (no known range "
                                   "to scale into [0, 1])")
    return _rgb(path, np.asarray(image.convert("RGB")), bits=8, meta=meta)


def _pnm_bits(path: Path, image: Image.Image) -> int | None:
    """A PGM's bit depth from its maxval (``P5\\n3 1\\n4095\\n`` -> 12); None for other formats."""
    if image.format != "PPM":
        return None
    with path.open("rb") as handle:
        lines = [line.split(b"#", 1)[0] for line in handle.read(1024).splitlines()]
    tokens = b" ".join(lines).split()
    try:
        return int(tokens[3]).bit_length()
    except (IndexError, ValueError):
        return None


# --------------------------------------------------------------------------- TIFF


def _read_tiff(path: Path, max_pixels: int) -> ImageData:
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            _check_size(path, int(page.imagelength), int(page.imagewidth), max_pixels)
            photometric = tifffile.PHOTOMETRIC(page.photometric).name
            if photometric not in ("MINISBLACK", "MINISWHITE", "RGB", "PALETTE"):
                # YCbCr, CMYK, Lab...: Pillow converts these to RGB better than we would.
                return _read_pillow(path, max_pixels)
            raw = page.asarray()
            if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and raw.ndim == 3:
                raw = np.moveaxis(raw, 0, -1)
            bits, colormap = int(page.bitspersample), page.colormap
            meta = {"format": "tiff", "photometric": photometric,
                    "compression": tifffile.COMPRESSION(page.compression).name.lower()}
    except ImageReadError:
        raise
    except Exception as exc:  # tifffile raises many exception types on corrupt data
        raise ImageReadError(path, f"corrupt or unreadable TIFF ({exc})") from exc
    return _from_tiff(path, raw, photometric, bits, colormap, meta)


def _from_tiff(path: Path, raw: np.ndarray, photometric: str, bits: int,
               colormap: np.ndarray | None, meta: dict[str, str]) -> ImageData:
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    if raw.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(path, f"TIFF sample type {raw.dtype} is not supported "
                                   "(8- or 16-bit unsigned only)")
    if photometric == "PALETTE":
        if colormap is None:
            raise ImageReadError(path, "palette TIFF without a colour map")
        # TIFF colour maps are 16-bit; indexing gives (3, H, W).
        rgb = np.moveaxis(colormap[:, raw], 0, -1)
        return _rgb(path, rgb.astype(np.uint16), bits=16, meta=meta)
    if photometric == "RGB":
        if raw.ndim != 3 or raw.shape[2] < 3:
            raise ImageReadError(path, f"RGB TIFF with unexpected shape {raw.shape}")
        return _rgb(path, raw, bits=bits, meta=meta)
    grey = raw[..., 0] if raw.ndim == 3 else raw  # extra samples (alpha) are dropped
    return _grey(path, grey, 0, 2**bits - 1, bits=bits,
                 invert=photometric == "MINISWHITE", meta=meta)


# --------------------------------------------------------------------------- DICOM


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence pydicom's validation warnings: they can quote tag values, identifiers included."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _scrub(text: str, ds: pydicom.Dataset | None) -> str:
    """``text`` with every identifying tag value of ``ds`` replaced by ``<redacted>``."""
    if ds is None:
        return text
    for keyword in IDENTIFYING_TAGS:
        try:
            value = str(ds.get(keyword, "") or "")
        except Exception:  # a malformed value cannot be scrubbed, nor can it be shown
            continue
        if len(value) >= 3:
            text = text.replace(value, "<redacted>")
    return text


def _dcmread(path: Path, *, stop_before_pixels: bool) -> pydicom.Dataset:
    try:
        with _quiet():
            # Deferring large elements reads the pixel data only when it is decoded, so
            # the size check runs before any of it is loaded.
            return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels,
                                   defer_size="1 MB")
    except InvalidDicomError as exc:
        raise ImageReadError(path, "not a DICOM file (no 'DICM' marker at byte 128)") from exc
    except Exception as exc:  # pydicom raises many exception types on corrupt headers
        raise ImageReadError(path, f"corrupt DICOM header ({type(exc).__name__})") from exc


def _read_dicom(path: Path, max_pixels: int) -> ImageData:
    ds = _dcmread(path, stop_before_pixels=False)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageReadError(path, "DICOM file without pixel data (not an image)")
    if photometric not in GREY_PHOTOMETRICS + COLOUR_PHOTOMETRICS:
        raise ImageReadError(path, f"photometric interpretation {photometric or 'missing'!r} "
                                   f"is not supported (supported: "
                                   f"{', '.join(GREY_PHOTOMETRICS + COLOUR_PHOTOMETRICS)})")
    _check_size(path, int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0), max_pixels)
    meta = _dicom_meta(ds, photometric)
    raw = _decode_first_frame(path, ds, meta["transfer_syntax"])
    bits = int(ds.get("BitsStored", 0) or ds.get("BitsAllocated", 8))
    if photometric in COLOUR_PHOTOMETRICS:
        if raw.ndim != 3:
            raise ImageReadError(path, f"{photometric} image decoded to shape {raw.shape}")
        return _rgb(path, raw, bits=bits, meta=meta)
    if raw.ndim != 2:
        raise ImageReadError(path, f"{photometric} image decoded to shape {raw.shape}")
    return _dicom_grey(path, ds, raw, photometric, bits, meta)


def _decode_first_frame(path: Path, ds: pydicom.Dataset, syntax: str) -> np.ndarray:
    try:
        with _quiet():
            # index=0 decodes only the first frame of a multi-frame file.
            return pydicom.pixels.pixel_array(ds, index=0)
    except Exception as exc:  # decoders raise many types; the reason is what matters
        reason = _scrub(f"cannot decode the pixel data ({syntax}): {exc}", ds)
        raise ImageReadError(path, reason) from exc


def _dicom_grey(path: Path, ds: pydicom.Dataset, raw: np.ndarray, photometric: str,
                bits: int, meta: dict[str, str]) -> ImageData:
    try:
        with _quiet():
            values = apply_modality_lut(raw, ds)
            values, low, high, meta["voi"] = _apply_voi(values, ds)
    except _BadHeaderValue as exc:
        raise ImageReadError(path, str(exc)) from None
    except Exception as exc:  # a malformed LUT: say which part failed, without values
        raise ImageReadError(path, f"cannot apply the DICOM modality/VOI LUT "
                                   f"({type(exc).__name__})") from exc
    if high <= low:
        raise ImageReadError(path, f"empty DICOM output range [{low}, {high}]")
    return _grey(path, values, low, high, bits=bits, invert=photometric == "MONOCHROME1",
                 meta=meta)


def _modality_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The range of values the modality LUT can output (as pydicom's windowing assumes)."""
    bits = int(ds.BitsStored)
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = sorted((low * float(slope) + float(intercept),
                            high * float(slope) + float(intercept)))
        if not (math.isfinite(low) and math.isfinite(high)):
            raise _BadHeaderValue(f"RescaleSlope {float(slope)!r} / RescaleIntercept "
                                  f"{float(intercept)!r} give a non-finite output range; "
                                  "expected finite numbers")
    return low, high


class _BadHeaderValue(ValueError):
    """A header value that makes the pixels unusable; its message is shown as it is."""


def _finite_window(ds: pydicom.Dataset) -> bool:
    """Whether the first WindowCenter/WindowWidth pair holds finite numbers."""
    try:
        values = [ds.WindowCenter, ds.WindowWidth]
        values = [float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v)
                  for v in values]
    except (TypeError, ValueError, IndexError):
        return False
    return all(math.isfinite(v) for v in values)


def _apply_voi(values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, float, float, str]:
    """Apply the first VOI LUT or window; return the values, their output range and what ran."""
    low, high = _modality_range(ds)
    if ds.get("VOILUTSequence"):
        table = np.asarray(ds.VOILUTSequence[0].LUTData)
        # The table's own extremes, not its descriptor: descriptors are often wrong.
        out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
        return out, float(table.min()), float(table.max()), "lut"
    if "WindowCenter" in ds and "WindowWidth" in ds:
        if not _finite_window(ds):
            return values, low, high, "none (non-finite window ignored)"
        try:
            return apply_voi_lut(values, ds, index=0, prefer_lut=False), low, high, "window"
        except ValueError:
            # An invalid window (width < 1) should not cost the image: use the full range.
            return values, low, high, "none (invalid window ignored)"
    return values, low, high, "none"


def _dicom_meta(ds: pydicom.Dataset, photometric: str) -> dict[str, str]:
    """Non-identifying header facts only."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    meta = {
        "format": "dicom",
        "photometric": photometric,
        "transfer_syntax": syntax.name if syntax else "unknown",
        "modality": str(ds.get("Modality", "") or ""),
        "laterality": str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or ""),
        "view": str(ds.get("ViewPosition", "") or ""),
        "frames": str(ds.get("NumberOfFrames", 1) or 1),
    }
    return {key: value for key, value in meta.items() if value}
