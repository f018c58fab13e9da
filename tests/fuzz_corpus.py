"""A corpus of malformed image files: every format radpath reads x every corruption.

Each file is one (format, corruption) pair, written under
``ROOT/{mammo,histo}/{normal,benign,malignant}/``, so that the ``folder`` source can ingest
each half. The full corpus is a little over a thousand files (``make_corpus(root)``); tests
use a sample that still holds every corruption at least once (``make_corpus(root,
sample=60)``). ``python -m tests.fuzz_corpus OUT`` writes the full corpus.

The corruptions are those of real archives and of hostile uploads: truncations, flipped
and garbage bytes, empty files, wrong suffixes, decompression bombs, images too small or
constant, NaN and overflowing DICOM rescale/window values, broken RLE streams (which make
the Rust RLE decoder panic), pixel-less and wrongly-typed DICOMs, extension-less DICOMs,
``.IMA`` and ``.dcm.gz`` exports, a greyscale picture saved as RGB, a colour photo shaped
like a mammogram, and files that are no image at all.
"""

from __future__ import annotations

import gzip
import io
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

LABELS = ("normal", "benign", "malignant")
SIDE = 96


@dataclass(frozen=True)
class Sample:
    """One corpus file's recipe: ``bytes_of()`` gives its content."""

    modality: str
    fmt: str
    corruption: str
    seed: int
    suffix: str
    bytes_of: Callable[[], bytes]

    @property
    def name(self) -> str:
        return f"{self.fmt}-{self.corruption}-{self.seed}{self.suffix}"


# --------------------------------------------------------------------------- base images


def mammo_pixels(side: int = SIDE, seed: int = 0) -> np.ndarray:
    """A breast-like greyscale image in [0, 1]: a bright half-disc, a denser blob, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] / side
    breast = ((xx ** 2 + (yy - 0.5) ** 2) < 0.6) * 0.5
    blob = np.exp(-(((xx - 0.35) ** 2 + (yy - 0.55) ** 2) / 0.005)) * 0.4
    return np.clip(breast + blob + rng.normal(0, 0.03, xx.shape), 0, 1)


def histo_pixels(side: int = SIDE, seed: int = 1) -> np.ndarray:
    """An H&E-like uint8 RGB tile: pink stroma, purple nuclei."""
    rng = np.random.default_rng(seed)
    tile = np.empty((side, side, 3), np.uint8)
    tile[...] = (230, 160, 200)
    tile[rng.random((side, side)) < 0.15] = (110, 60, 160)
    return tile


def pillow_bytes(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pgm_bytes(grey: np.ndarray, maxval: int, *, plain: bool = False) -> bytes:
    height, width = grey.shape
    values = np.rint(grey * maxval).astype(">u2" if maxval > 255 else "u1")
    if plain:
        body = " ".join(str(int(v)) for v in values.ravel()).encode()
        return f"P2\n{width} {height}\n{maxval}\n".encode() + body + b"\n"
    return f"P5\n{width} {height}\n{maxval}\n".encode() + values.tobytes()


def ppm_bytes(rgb: np.ndarray) -> bytes:
    height, width, _ = rgb.shape
    return f"P6\n{width} {height}\n255\n".encode() + rgb.tobytes()


def tiff_bytes(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def dicom_dataset(pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                  bits: int = 16) -> Dataset:
    """A secondary-capture DICOM whose header names a fictional patient."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["fuzz"])
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "Fuzz^Patient", "FUZZ-ID-7", "ACC-1"
    ds.Modality = "MG" if pixels.ndim == 2 else "SM"
    ds.set_pixel_data(pixels, "RGB" if pixels.ndim == 3 else "MONOCHROME2", bits)
    ds.PhotometricInterpretation = photometric
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def grey_dicom(grey: np.ndarray, **tags: object) -> Dataset:
    ds = dicom_dataset(np.rint(grey * 4095).astype(np.uint16), bits=12)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def rle_panic_dicom(grey: np.ndarray | None = None) -> bytes:
    """An RLE DICOM whose segments repeat past the frame: pylibjpeg-rle panics on it
    (a ``PanicException``, which derives from ``BaseException``)."""
    ds = grey_dicom(mammo_pixels(64) if grey is None else grey)
    ds.compress(RLELossless)
    fragment = list(generate_fragments(ds.PixelData))[-1]
    header, body = fragment[:64], fragment[64:]
    ds.PixelData = encapsulate([header + bytes([0x81, 0x55]) * (len(body) // 2)])
    return dicom_bytes(ds)


# --------------------------------------------------------------------------- formats


def _formats(modality: str, seed: int) -> dict[str, tuple[str, Callable[[], bytes]]]:
    """Valid files of each format: name -> (suffix, bytes)."""
    grey = mammo_pixels(seed=seed)
    rgb = histo_pixels(seed=seed)
    grey8 = np.rint(grey * 255).astype(np.uint8)
    grey16 = np.rint(grey * 65535).astype(np.uint16)
    if modality == "histo":
        return {
            "png-rgb": (".png", lambda: pillow_bytes(rgb, "PNG")),
            "png-rgba": (".png", lambda: pillow_bytes(np.dstack([rgb, np.full(
                rgb.shape[:2], 255, np.uint8)]), "PNG")),
            "jpeg-rgb": (".jpg", lambda: pillow_bytes(rgb, "JPEG", quality=90)),
            "ppm": (".ppm", lambda: ppm_bytes(rgb)),
            "bmp-rgb": (".bmp", lambda: pillow_bytes(rgb, "BMP")),
            "tiff-rgb": (".tif", lambda: tiff_bytes(rgb, photometric="rgb")),
            "tiff-rgb-lzw": (".tiff", lambda: tiff_bytes(rgb, photometric="rgb",
                                                         compression="lzw")),
            "dicom-rgb": (".dcm", lambda: dicom_bytes(dicom_dataset(rgb, photometric="RGB",
                                                                    bits=8))),
        }
    return {
        "png-grey8": (".png", lambda: pillow_bytes(grey8, "PNG")),
        "png-grey16": (".png", lambda: pillow_bytes(grey16, "PNG")),
        "pgm-p5": (".pgm", lambda: pgm_bytes(grey, 4095)),
        "pgm-p2": (".pgm", lambda: pgm_bytes(grey, 255, plain=True)),
        "jpeg-grey": (".jpeg", lambda: pillow_bytes(grey8, "JPEG", quality=90)),
        "bmp-grey": (".bmp", lambda: pillow_bytes(grey8, "BMP")),
        "tiff-grey16": (".tif", lambda: tiff_bytes(grey16)),
        "tiff-miniswhite": (".tif", lambda: tiff_bytes(255 - grey8,
                                                       photometric="miniswhite")),
        "dicom": (".dcm", lambda: dicom_bytes(grey_dicom(grey))),
        "dicom-mono1": (".dcm", lambda: dicom_bytes(grey_dicom(
            1 - grey, PhotometricInterpretation="MONOCHROME1"))),
        "dicom-rle": (".dcm", lambda: _compressed(grey, RLELossless)),
        "dicom-j2k": (".dcm", lambda: _compressed(grey, JPEG2000Lossless)),
        "dicom-noext": ("", lambda: dicom_bytes(grey_dicom(grey))),
        "dicom-ima": (".IMA", lambda: dicom_bytes(grey_dicom(grey))),
    }


def _compressed(grey: np.ndarray, syntax: str) -> bytes:
    ds = grey_dicom(grey)
    ds.compress(syntax)
    return dicom_bytes(ds)


# --------------------------------------------------------------------------- corruptions


def _flip(data: bytes, seed: int, count: int, start_fraction: float = 0.1) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    start = int(len(out) * start_fraction)
    for index in rng.integers(start, len(out), count):
        out[index] ^= int(rng.integers(1, 256))
    return bytes(out)


BYTE_CORRUPTIONS: dict[str, Callable[[bytes, int], bytes]] = {
    "valid": lambda data, seed: data,
    "truncated-10": lambda data, seed: data[: len(data) // 10],
    "truncated-50": lambda data, seed: data[: len(data) // 2],
    "truncated-95": lambda data, seed: data[: len(data) * 95 // 100],
    "empty": lambda data, seed: b"",
    "flip-3": lambda data, seed: _flip(data, seed, 3),
    "flip-30": lambda data, seed: _flip(data, seed, 30),
    "flip-header": lambda data, seed: _flip(data, seed, 4, 0.0)[:64] + data[64:],
    "garbage-head": lambda data, seed: np.random.default_rng(seed).bytes(16) + data[16:],
    "garbage-tail": lambda data, seed: data + np.random.default_rng(seed).bytes(4096),
    "zeroed-tail": lambda data, seed: data[: len(data) // 2] + bytes(len(data) - len(data) // 2),
    "random-bytes": lambda data, seed: np.random.default_rng(seed).bytes(len(data)),
}


def _content_corruptions(modality: str, seed: int) -> dict[str, tuple[str, Callable[[], bytes]]]:
    """Files that decode, or nearly, but hold the wrong content."""
    grey = mammo_pixels(seed=seed)
    rgb = histo_pixels(seed=seed)
    grey8 = np.rint(grey * 255).astype(np.uint8)
    photo = np.dstack([grey8, np.roll(grey8, 9, axis=1), 255 - grey8])
    common = {
        "row-1x500": (".png", lambda: pillow_bytes(np.tile(grey8[:1], (1, 6))[:, :500], "PNG")),
        "column-500x1": (".png", lambda: pillow_bytes(np.tile(grey8[:, :1], (6, 1))[:500],
                                                      "PNG")),
        "tiny-8x8": (".png", lambda: pillow_bytes(grey8[:8, :8], "PNG")),
        "tiny-15": (".png", lambda: pillow_bytes(rgb[:15, :15], "PNG")),
        "constant": (".png", lambda: pillow_bytes(np.full((64, 64), 128, np.uint8), "PNG")),
        "bomb-png": (".png", lambda: _png_header(60_000, 60_000)),
        "bomb-tiff": (".tif", lambda: _tiff_claiming(100_000, 100_000)),
        "bomb-dicom": (".dcm", lambda: _dicom_claiming(40_000, 40_000)),
        "text": (".png", lambda: b"this is a note, not an image\n" * 10),
        "html": (".dcm", lambda: b"<html><body>404 not found</body></html>"),
        "wrong-suffix": (".dcm", lambda: pillow_bytes(grey8 if modality == "mammo" else rgb,
                                                      "PNG")),
        "dicom-as-png": (".png", lambda: dicom_bytes(grey_dicom(grey))),
        "float-tiff": (".tif", lambda: tiff_bytes(grey.astype(np.float32))),
        "int32-tiff": (".tif", lambda: tiff_bytes((grey * 2**20).astype(np.int32) - 2**18)),
        "one-bit": (".png", lambda: pillow_bytes(grey8 > 128, "PNG")),
        "grey-as-rgb": (".png", lambda: pillow_bytes(np.dstack([grey8] * 3), "PNG")),
        "colour-photo": (".jpg", lambda: pillow_bytes(photo, "JPEG", quality=90)),
        "gzipped-dicom": (".dcm.gz", lambda: gzip.compress(dicom_bytes(grey_dicom(grey)),
                                                           mtime=0)),
        "unknown-suffix": (".dat", lambda: pillow_bytes(grey8, "PNG")),
        "hidden-file": (".png", lambda: pillow_bytes(grey8, "PNG")),
    }
    dicoms = {
        "nan-slope": lambda: dicom_bytes(grey_dicom(grey, RescaleSlope="NaN",
                                                    RescaleIntercept="0")),
        "inf-slope": lambda: dicom_bytes(grey_dicom(grey, RescaleSlope="1e308",
                                                    RescaleIntercept="1e308")),
        "nan-window": lambda: dicom_bytes(grey_dicom(grey, WindowCenter="NaN",
                                                     WindowWidth="NaN")),
        "zero-window": lambda: dicom_bytes(grey_dicom(grey, WindowCenter="100",
                                                      WindowWidth="0")),
        "rle-panic": lambda: rle_panic_dicom(grey),
        "no-pixels": lambda: _without_pixels(grey),
        "palette-dicom": lambda: dicom_bytes(grey_dicom(
            grey, PhotometricInterpretation="PALETTE COLOR")),
        "rows-lie": lambda: dicom_bytes(grey_dicom(grey, Rows=SIDE * 2)),
        "bits-lie": lambda: dicom_bytes(grey_dicom(grey, BitsAllocated=8)),
        "syntax-lie": lambda: dicom_bytes(grey_dicom(grey)).replace(
            b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.5\x00", 1),
    }
    common.update({name: (".dcm", make) for name, make in dicoms.items()})
    return common


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is a stub)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _tiff_claiming(width: int, height: int) -> bytes:
    data = bytearray(tiff_bytes(np.zeros((8, 8), np.uint8)))
    # tifffile writes ImageWidth (256) and ImageLength (257) as SHORT or LONG entries.
    for tag, value in ((256, width), (257, height)):
        entry = struct.pack("<HH", tag, 3)
        at = data.find(entry)
        if at < 0:
            entry = struct.pack("<HH", tag, 4)
            at = data.find(entry)
        data[at + 2: at + 12] = struct.pack("<HII", 4, 1, value)
    return bytes(data)


def _dicom_claiming(rows: int, columns: int) -> bytes:
    ds = grey_dicom(mammo_pixels(16))
    ds.Rows, ds.Columns = rows, columns
    return dicom_bytes(ds)


def _without_pixels(grey: np.ndarray) -> bytes:
    ds = grey_dicom(grey)
    del ds.PixelData
    return dicom_bytes(ds)


# --------------------------------------------------------------------------- the corpus


def samples(seeds: int = 4) -> Iterator[Sample]:
    """Every (format x byte corruption) and every content corruption, for ``seeds`` seeds."""
    for modality in ("mammo", "histo"):
        for seed in range(seeds):
            for fmt, (suffix, make) in _formats(modality, seed).items():
                for corruption, corrupt in BYTE_CORRUPTIONS.items():
                    yield Sample(modality, fmt, corruption, seed, suffix,
                                 _corrupted(make, corrupt, seed))
            for corruption, (suffix, make) in _content_corruptions(modality, seed).items():
                yield Sample(modality, "content", corruption, seed, suffix, make)


def _corrupted(make: Callable[[], bytes], corrupt: Callable[[bytes, int], bytes],
               seed: int) -> Callable[[], bytes]:
    return lambda: corrupt(make(), seed)


def make_corpus(root: str | Path, *, sample: int | None = None, seed: int = 0,
                seeds: int = 4) -> list[Path]:
    """Write the corpus (``seeds`` variants of each file) under ``root``; with ``sample``,
    about that many files (every corruption of each modality kept once, the rest drawn
    at random with ``seed``)."""
    root = Path(root)
    chosen = list(samples(seeds))
    if sample is not None:
        chosen = _stratified(chosen, sample, seed)
    written = []
    for index, item in enumerate(chosen):
        folder = root / item.modality / LABELS[index % len(LABELS)]
        folder.mkdir(parents=True, exist_ok=True)
        name = ("." + item.name) if item.corruption == "hidden-file" else item.name
        path = folder / name
        path.write_bytes(item.bytes_of())
        written.append(path)
    return written


def _stratified(items: list[Sample], count: int, seed: int) -> list[Sample]:
    """One file per (modality, corruption), then random others up to ``count``."""
    rng = np.random.default_rng(seed)
    first: dict[tuple[str, str], Sample] = {}
    for item in items:
        first.setdefault((item.modality, item.corruption), item)
    kept = list(first.values())
    rest = [item for item in items if item not in kept]
    extra = max(0, count - len(kept))
    picks = rng.choice(len(rest), size=min(extra, len(rest)), replace=False)
    return kept + [rest[i] for i in sorted(picks)]


if __name__ == "__main__":
    files = make_corpus(sys.argv[1] if len(sys.argv) > 1 else "fuzz-corpus")
    print(f"{len(files)} files written")


# --------------------------------------------------------------------------- the audits


@dataclass
class IngestAudit:
    """Where each file of one half of the corpus ended, and what preprocessing said."""

    files: list[Path]
    admitted: dict[Path, str]  # path -> label
    skipped: dict[Path, str]  # path -> reason
    preprocessing_failures: dict[Path, str]

    @property
    def unaccounted(self) -> list[Path]:
        return [p for p in self.files if p not in self.admitted and p not in self.skipped]


def audit_ingest(root: Path, modality: str, out: Path, *, workers: int = 2) -> IngestAudit:
    """Ingest ``root/modality`` with the folder source and preprocess every admitted file."""
    import csv

    from radpath.data.ingest import ingest
    from radpath.data.manifest import read_manifest
    from radpath.data.preprocess import RecordPreprocessor
    from radpath.data.sources import SourceOptions

    folder = root / modality
    report = ingest("folder", folder, out / f"{modality}.csv", workers=workers,
                    options=SourceOptions(modality=modality), progress=False)
    records = list(read_manifest(report.manifest_path))
    with report.skipped_path.open(newline="") as handle:
        skipped = {Path(row["path"]).resolve(): row["reason"] for row in csv.DictReader(handle)}
    pre = RecordPreprocessor()
    failures = {}
    for record in records:
        try:
            pre(record)
        except Exception as exc:
            failures[Path(record.path).resolve()] = f"{type(exc).__name__}: {exc}"
    files = sorted(p.resolve() for p in folder.rglob("*") if p.is_file())
    return IngestAudit(files, {Path(r.path).resolve(): r.label for r in records}, skipped,
                       failures)


def audit_service(client, root: Path, mammo: bytes) -> dict[Path, tuple[int, str]]:
    """Post every corpus file to ``POST /v1/cases`` (histology beside the good ``mammo``);
    path -> (status, content type)."""
    answers = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        modality = path.relative_to(root).parts[0]
        files = [(modality, (path.name, path.read_bytes(), "application/octet-stream"))]
        if modality == "histo":
            files.insert(0, ("mammo", ("good.png", mammo, "image/png")))
        response = client.post("/v1/cases", files=files)
        answers[path] = (response.status_code, response.headers.get("content-type", ""))
        if response.status_code >= 400:
            assert response.json()["detail"], (path.name, response.text)
    return answers
