"""Ingest: a dataset layout in, a validated manifest and a ``skipped.csv`` out.

The dataset source reads the layout; then every image is decoded once, in parallel, so corrupt,
truncated, non-image, constant or wrong-modality files are found now rather than in the
middle of training. Nothing is dropped silently: each skipped file is written to
``skipped.csv`` beside the manifest with its reason.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radpath.atomic import atomic_path
from radpath.data.manifest import Manifest, Record, write_manifest
from radpath.data.sources import SOURCES, Skipped, SourceOptions
from radpath.errors import RadpathError
from radpath.parallel import parallel_map

if TYPE_CHECKING:
    from radpath.data.io import ImageData
    from radpath.data.preprocess import RecordPreprocessor


@dataclass(frozen=True)
class IngestReport:
    """What an ingest produced."""

    records: list[Record]
    skipped: list[Skipped]
    manifest_path: Path
    skipped_path: Path

    @property
    def patients(self) -> int:
        return len({r.patient_id for r in self.records})


def check_image(task: tuple[str, str, tuple[tuple[float, float], ...]]) -> str:
    """Decode one image and check that it suits its record and that preprocessing accepts
    it; "" when fine, else the reason.

    Module-level and exception-free so that it can run in worker processes over a whole
    cohort without one bad file stopping the batch.
    """
    from radpath.data.io import read_image

    path, modality, lesion_centres = task
    try:
        image = read_image(path)
        return (modality_problem(image.pixels, image.kind, modality)
                or _lesion_problem(image.pixels.shape[:2], lesion_centres)
                or _preprocess_problem(image, path, modality))
    except RadpathError as exc:
        return exc.reason if hasattr(exc, "reason") else str(exc)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a decoder bug (even a Rust panic) is a skip, not a crash
        return f"could not be decoded ({type(exc).__name__})"


# Below this, an RGB image's colour is JPEG noise: the 99th percentile of a pixel's
# channel spread (max - min, 0..255) in a greyscale picture saved as RGB is 0 to 3, in
# H&E stains 40 or more.
GREY_CHROMA = 12


def modality_problem(pixels: np.ndarray, kind: str, modality: str) -> str:
    """Why an image cannot be of ``modality`` ("" when it can): a colour image as a
    mammogram, a greyscale one (or a greyscale picture saved as RGB) as H&E."""
    if modality == "mammo" and kind == "rgb" and chroma(pixels) > GREY_CHROMA:
        return "colour image where a greyscale mammogram was expected"
    if modality == "histo" and kind != "rgb":
        return "greyscale image where an RGB H&E image was expected"
    if modality == "histo" and chroma(pixels) <= GREY_CHROMA:
        return ("RGB image without colour (a greyscale picture saved as RGB) where an H&E "
                "stain was expected")
    return ""


def chroma(rgb: np.ndarray) -> float:
    """The 99th percentile of the per-pixel channel spread of a uint8 RGB image."""
    step = max(1, int(np.sqrt(rgb.shape[0] * rgb.shape[1] / 250_000)))  # ~250k pixels
    sample = rgb[::step, ::step].astype(np.int16)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return float(np.percentile(spread, 99))


# One preprocessor per worker process, built on first use (it fits a few statistics).
_PREPROCESSOR: list[RecordPreprocessor] = []


def _preprocess_problem(image: ImageData, path: str, modality: str) -> str:
    """What the default preprocessing says of the image: training must not meet it first."""
    from radpath.data.preprocess import RecordPreprocessor

    if not _PREPROCESSOR:
        _PREPROCESSOR.append(RecordPreprocessor())
    record = Record(image_id="check", patient_id="check", modality=modality, path=path)
    try:
        _PREPROCESSOR[0].from_image(image, record)
    except (RadpathError, ValueError) as exc:
        return f"preprocessing refuses it: {exc}"
    return ""


def _lesion_problem(shape: tuple[int, ...], centres: Sequence[tuple[float, float]]) -> str:
    height, width = shape
    for x, y in centres:
        if not (0 <= x <= width and 0 <= y <= height):
            return f"lesion centre ({x:g}, {y:g}) lies outside the {width}x{height} image"
    return ""


def ingest(source: str, root: str | Path, out: str | Path, *,
           options: SourceOptions | None = None, workers: int | None = None,
           verify: bool = True, progress: bool = True) -> IngestReport:
    """Ingest ``root`` with the dataset source called ``source`` into the manifest ``out``.

    Raises:
        RadpathError: when no image could be ingested (``skipped.csv`` is still written).
    """
    reader = SOURCES.get(source)(Path(root), options)
    found = list(reader.scan())
    records = [item for item in found if isinstance(item, Record)]
    skipped = [item for item in found if isinstance(item, Skipped)]
    # Whole-slide sources check each slide while scanning: decoding one whole is never done.
    if verify and records and getattr(reader, "verify_pixels", True):
        tasks = [(r.path, r.modality, tuple((les.x, les.y) for les in r.lesions))
                 for r in records]
        reasons = parallel_map(check_image, tasks, workers=workers,
                               description=f"checking {source} images", progress=progress)
        skipped += [Skipped(r.path, why) for r, why in zip(records, reasons, strict=True) if why]
        records = [r for r, why in zip(records, reasons, strict=True) if not why]
    out = Path(out)
    skipped_path = write_skipped(skipped, out.with_name("skipped.csv"))
    if not records:
        raise RadpathError(f"nothing could be ingested from {root} with the '{source}' source "
                           f"({len(skipped)} file(s) skipped, reasons in {skipped_path})")
    Manifest(records)  # duplicate image ids fail here, before anything is written
    write_manifest(records, out)
    return IngestReport(records, skipped, out, skipped_path)


def write_skipped(skipped: Sequence[Skipped], path: Path) -> Path:
    """Write ``path, reason`` rows atomically; an empty file (header only) when none."""
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "reason"])
        writer.writerows([s.path, s.reason] for s in skipped)
    return path
