"""The dataset-source contract: a layout on disk in, manifest records out.

A source only reads the layout (file names, index files, headers); it never decodes
pixels. Ingest decodes every image afterwards, in parallel, to catch corrupt files.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from radpath.data.manifest import Record
from radpath.registry import Registry


@dataclass(frozen=True)
class Skipped:
    """A file the source could not turn into a record, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class SourceOptions:
    """Options a user may pass to any source (``radpath ingest``); each uses those it needs.

    Attributes:
        labels: a CSV mapping (``path`` or ``patient_id`` or ``image_id``, ``label``) for
            sources whose labels are not in the layout itself.
        descriptions: description CSVs shipped with a dataset (CBIS-DDSM).
        domain: a fixed domain name overriding the source's default domain.
        modality: the modality of sources that do not imply one (``folder``).
    """

    labels: Path | None = None
    descriptions: tuple[Path, ...] = ()
    domain: str | None = None
    modality: str | None = None


class DatasetSource(ABC):
    """Turns one dataset layout into manifest records."""

    name: ClassVar[str]
    modality: ClassVar[str]

    def __init__(self, root: str | Path, options: SourceOptions | None = None) -> None:
        self.root = Path(root)
        self.options = options or SourceOptions()

    @abstractmethod
    def scan(self) -> Iterator[Record | Skipped]:
        """Yield one record per image found, or a :class:`Skipped` naming the file and reason."""


SOURCES: Registry[type[DatasetSource]] = Registry("dataset source")


def register_source(cls: type[DatasetSource]) -> type[DatasetSource]:
    """Class decorator registering a dataset source under its ``name``."""
    return SOURCES.register(cls)


IMAGE_SUFFIXES = (".png", ".pgm", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".bmp")


def image_files(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under ``root`` (recursively), sorted for a stable manifest order."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
