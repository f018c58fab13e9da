"""A plain folder with one sub-folder per label: ``ROOT/{normal,benign,malignant}/**/image``.

The modality is not implied by the layout, so the user names it (``--modality``). Each
image is its own patient unless the file sits in a per-patient sub-folder
(``ROOT/label/PATIENT/image``), in which case that folder names the patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from radpath.data.manifest import LABELS, MODALITIES, Record
from radpath.data.sources.base import DatasetSource, Skipped, image_files, register_source
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
        for path in image_files(self.root):
            relative = path.relative_to(self.root)
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
