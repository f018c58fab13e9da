"""Ingest: a dataset layout in, a validated manifest and a ``skipped.csv`` out.

The dataset source reads the layout; then every image is decoded once, in parallel, so corrupt,
truncated, non-image, constant or wrong-modality files are found now rather than in the
middle of training. Nothing is dropped silently: each skipped file is written to
``skipped.csv`` beside the manifest with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
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


def _crashed(_task: tuple) -> str:
    return ("the decoder crashed the worker process (a segmentation fault or out of "
            "memory) on this file")


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
           verify: bool = True, progress: bool = True,
           pseudonym_key: str | Path | None = None) -> IngestReport:
    """Ingest ``root`` with the dataset source called ``source`` into the manifest ``out``.

    Args:
        pseudonym_key: a key file (created when missing, never inside ``out``'s folder):
            ``image_id``, ``patient_id`` and ``pair_id`` become keyed hashes of what the
            source gave (file names are often patient names), stated in the manifest's
            ``id_scheme`` column. The same key gives the same ids in every ingest, so
            modalities still pair by patient.

    Raises:
        RadpathError: when no image could be ingested (``skipped.csv`` is still written).
    """
    key = None if pseudonym_key is None else load_pseudonym_key(pseudonym_key,
                                                                Path(out).parent)
    reader = SOURCES.get(source)(Path(root), options)
    found = list(reader.scan())
    records = [item for item in found if isinstance(item, Record)]
    skipped = [item for item in found if isinstance(item, Skipped)]
    # Whole-slide sources check each slide while scanning: decoding one whole is never done.
    if verify and records and getattr(reader, "verify_pixels", True):
        tasks = [(r.path, r.modality, tuple((les.x, les.y) for les in r.lesions))
                 for r in records]
        reasons = parallel_map(check_image, tasks, workers=workers, on_crash=_crashed,
                               description=f"checking {source} images", progress=progress)
        skipped += [Skipped(r.path, why) for r, why in zip(records, reasons, strict=True) if why]
        records = [r for r, why in zip(records, reasons, strict=True) if not why]
    out = Path(out)
    skipped_path = write_skipped(skipped, out.with_name("skipped.csv"))
    if not records:
        raise RadpathError(f"nothing could be ingested from {root} with the '{source}' source "
                           f"({len(skipped)} file(s) skipped, reasons in {skipped_path})")
    if key is not None:
        records = pseudonymise(records, key)
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


# --------------------------------------------------------------------------- pseudonyms

ID_SCHEME = "hmac-sha256/16"


def pseudonymise(records: Sequence[Record], key: bytes) -> list[Record]:
    """``records`` with keyed-hash ids: stable for one key, not reversible without it."""
    return [r.with_(image_id=pseudonym(key, "image", r.image_id),
                    patient_id=pseudonym(key, "patient", r.patient_id),
                    pair_id=pseudonym(key, "pair", r.pair_id) if r.pair_id else "",
                    id_scheme=ID_SCHEME) for r in records]


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """``kind``-prefixed HMAC-SHA256 of ``value``, 16 hex digits (64 bits)."""
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind[:3]}-{digest[:16]}"


def load_pseudonym_key(path: str | Path, outputs: Path) -> bytes:
    """The key of ``path``, created (random, mode 0600) when missing.

    Raises:
        RadpathError: the key file would sit inside ``outputs`` (it must never travel with
            a manifest), or holds fewer than 32 characters.
    """
    path = Path(path).expanduser()
    if path.resolve().is_relative_to(outputs.resolve()):
        raise RadpathError(f"pseudonym key {path} lies inside the output folder {outputs}: "
                           "keep it elsewhere, or the ids can be recomputed from the outputs")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
    key = path.read_text().strip()
    if len(key) < 32:
        raise RadpathError(f"pseudonym key {path} holds {len(key)} characters; expected at "
                           "least 32 (delete it to have a new one made)")
    return key.encode()
