"""The slide catalogue: ``radpath ingest wsi`` (find slides) and ``radpath tiles`` (grid them).

``slides.csv`` is a radpath manifest (one row per slide, modality ``histo``) with the
slide's metadata in extra columns that ``read_manifest`` ignores: ``mpp`` and where it
came from, level-0 size, level count, vendor and reader. Every slide that cannot be used is
written to ``skipped.csv`` with its reason; the batch goes on.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from radpath.atomic import atomic_path
from radpath.data.manifest import COLUMNS, Record, read_manifest, record_to_row
from radpath.data.sources import Skipped
from radpath.data.wsi import DICOM_SUFFIXES, SLIDE_SUFFIXES, Slide, SlideInfo
from radpath.errors import RadpathError
from radpath.parallel import parallel_map

SLIDE_COLUMNS = ("mpp", "mpp_source", "width", "height", "levels", "vendor", "backend")


def find_slides(root: Path) -> list[Path]:
    """Slide files under ``root``, and each folder holding a DICOM WSI series, sorted."""
    if not root.is_dir():
        raise RadpathError(f"{root}: slide folder not found")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    slides = [p for p in files if p.suffix.lower() in SLIDE_SUFFIXES]
    dicom_folders = sorted({p.parent for p in files if p.suffix.lower() in DICOM_SUFFIXES})
    return sorted(slides + dicom_folders)


def slide_id(path: Path, root: Path) -> str:
    """An image id from the path below ``root``: folders joined by ``-``, suffix dropped."""
    relative = path.relative_to(root) if path != root else Path(path.name)
    parts = [*relative.parent.parts, relative.stem if path.is_file() else relative.name]
    return "-".join(part for part in parts if part and part != ".")


@dataclass(frozen=True)
class SlideRow:
    """One slide of ``slides.csv``: its manifest record and its metadata."""

    record: Record
    info: SlideInfo


def _describe(task: tuple[str, float | None]) -> SlideInfo | str:
    """Open one slide and read its metadata; the reason as a string when it cannot be used."""
    path, mpp = task
    try:
        with Slide(path, mpp=mpp) as slide:
            info = slide.info()
    except RadpathError as exc:
        return str(exc)
    except Exception as exc:  # a reader bug must become a skip, not a crash
        return f"{path}: could not be opened ({type(exc).__name__}: {exc})"
    if info.mpp is None:
        return (f"{path}: neither microns per pixel nor objective power in the metadata; "
                "give --mpp")
    return info


def ingest_slides(root: str | Path, out: str | Path, *, mpp: float | None = None,
                  domain: str | None = None, label: str = "", workers: int | None = None,
                  progress: bool = True) -> tuple[list[SlideRow], list[Skipped]]:
    """Find the slides under ``root``, read their metadata and write ``out`` (+ skipped.csv).

    Args:
        mpp: microns per pixel for every slide, overriding the metadata.
        domain: the domain of every slide (default: the scanner vendor).
        label: the label of every slide (default: unknown).

    Raises:
        RadpathError: when no slide could be used (``skipped.csv`` is still written).
    """
    from radpath.data.ingest import write_skipped

    root, out = Path(root), Path(out)
    paths = find_slides(root)
    tasks = [(str(p.resolve()), mpp) for p in paths]
    results = parallel_map(_describe, tasks, workers=workers, description="reading slides",
                           progress=progress)
    rows, skipped = [], []
    for path, (resolved, _), result in zip(paths, tasks, results, strict=True):
        if isinstance(result, str):
            skipped.append(Skipped(resolved, result))
            continue
        image_id = slide_id(path, root)
        record = Record(image_id=image_id, patient_id=image_id, modality="histo", path=resolved,
                        label=label, domain=domain or result.vendor, source="wsi",
                        magnification=f"{result.magnification:g}" if result.magnification
                        else "")
        rows.append(SlideRow(record, result))
    skipped_path = write_skipped(skipped, out.with_name("skipped.csv"))
    if not rows:
        raise RadpathError(f"no slide could be read under {root} ({len(skipped)} skipped, "
                           f"reasons in {skipped_path})")
    write_slides(rows, out)
    return rows, skipped


def write_slides(rows: Sequence[SlideRow], path: Path) -> Path:
    """``slides.csv``: the manifest columns, then :data:`SLIDE_COLUMNS`, written atomically."""
    from radpath.data.manifest import Manifest

    Manifest(row.record for row in rows)  # duplicate ids fail before anything is written
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, *SLIDE_COLUMNS])
        writer.writeheader()
        for row in rows:
            info = asdict(row.info)
            extra = {key: "" if info[key] is None else str(info[key]) for key in SLIDE_COLUMNS}
            writer.writerow({**record_to_row(row.record), **extra})
    return path


def read_slides(path: str | Path) -> list[tuple[Record, float | None]]:
    """The records of ``slides.csv`` (or any manifest of slides) with their mpp, if stated."""
    manifest = read_manifest(path)
    with Path(path).open(newline="", encoding="utf-8") as handle:
        extras = [row.get("mpp") or "" for row in csv.DictReader(handle)]
    out = []
    for record, mpp in zip(manifest, extras, strict=True):
        resolved = record.with_(path=str(manifest.resolve_path(record)))
        out.append((resolved, float(mpp) if mpp else None))
    return out
