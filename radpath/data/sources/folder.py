"""A plain folder with one sub-folder per label: ``ROOT/{normal,benign,malignant}/**/image``.

The modality is not implied by the layout, so the user names it (``--modality``). Each
image is its own patient unless the file sits in a per-patient sub-folder
(``ROOT/label/PATIENT/image``), in which case that folder names the patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from radpath.data.manifest import LABELS, MODALITIES, Record
from radpath.data.sources.base import IMAGE_SUFFIXES, DatasetSource, Skipped, register_source
from radpath.errors import RadpathError


@register_source
class FolderSource(DatasetSource):
    """Labels from sub-folder names; modality from the options."""

    name = "folder"

    modality = ""

    def scan(self) -> Iterator[Record | Skipped]:
        modality = self.options.modality
        if modality not in MODALITIES:
            raise RadpathError(f"the 'folder' source needs --modality {' or '.join(MODALITIES)}"
                               f" (got {modality!r})")
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            relative = path.relative_to(self.root)
            if not_image := not_an_image(path):
                yield Skipped(str(path), not_image)
                continue
            label = relative.parts[0].lower() if len(relative.parts) > 1 else ""
            if label not in LABELS:
                yield Skipped(str(path), f"not under a label folder ({', '.join(LABELS)}); "
                              f"found {relative.parts[0]!r}")
                continue
            yield self._record(path, relative, label, modality)

    def _record(self, path: Path, relative: Path, label: str, modality: str) -> Record:
        image_id = "/".join(relative.with_suffix("").parts)
        patient_id = relative.parts[1] if len(relative.parts) > 2 else image_id
        return Record(
            image_id=image_id,
            patient_id=patient_id,
            modality=modality,
            path=str(path.resolve()),
            label=label,
            domain=self.options.domain or self.root.resolve().name,
            source="folder",
        )


# Suffixes of the formats io.read_image decodes: PPM and Siemens' .IMA besides the usual.
READABLE_SUFFIXES = (*IMAGE_SUFFIXES, ".ppm", ".pnm", ".ima")
# First bytes of the formats Pillow and tifffile read (a file may lack its suffix).
_MAGICS = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+",
           b"BM", b"P2", b"P5", b"P6")


def not_an_image(path: Path) -> str:
    """Why ``path`` is not taken as an image ("" when it is): every file of the folder is
    either a record or a skipped row, never silently left out."""
    if path.name.startswith("."):
        return "hidden file (its name starts with '.'): not read"
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        return f"cannot open the file ({exc.strerror or exc})"
    if head[128:132] == b"DICM" or path.suffix.lower() in READABLE_SUFFIXES:
        return ""
    if head.startswith(_MAGICS):
        return ""
    if head.startswith(b"\x1f\x8b"):
        return "gzip-compressed file: decompress it first (gunzip), then ingest again"
    kind = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
    return (f"not an image format radpath reads ({kind}, and neither a DICOM 'DICM' marker "
            f"nor a PNG/JPEG/TIFF/BMP/PNM signature); expected one of "
            f"{', '.join(READABLE_SUFFIXES)}")
