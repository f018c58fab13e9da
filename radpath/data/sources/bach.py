"""BACH (ICIAR 2018 Grand Challenge on Breast Cancer Histology), microscopy part.

Layout, as distributed::

    ICIAR2018_BACH_Challenge/Photos/
        Normal/n001.tif ...   Benign/b001.tif ...   InSitu/is001.tif ...   Invasive/iv001.tif ...
        microscopy_ground_truth.csv      (optional; "file name,class", no header)

``root`` may be the folder holding ``ICIAR2018_BACH_Challenge``, that folder, or ``Photos``
itself. All images are 2048 x 1536 RGB TIFFs taken at 200x.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from radpath.data.manifest import Record
from radpath.data.sources.base import DatasetSource, Skipped, image_files, register_source
from radpath.errors import RadpathError

CLASSES = ("Normal", "Benign", "InSitu", "Invasive")
LABELS = {"Normal": "normal", "Benign": "benign", "InSitu": "malignant", "Invasive": "malignant"}
# The 4-class ordinal grading radpath uses for BACH: increasing severity, so in situ
# (malignant, confined to the duct) sits below invasive carcinoma.
GRADES = {name: grade for grade, name in enumerate(CLASSES)}
GROUND_TRUTH = "microscopy_ground_truth.csv"
MAGNIFICATION = "200"
_SUFFIXES = (".tif", ".tiff")


def _class_name(text: str) -> str | None:
    """The BACH class spelled ``text`` ("InSitu", "in situ", "in_situ" ...), or None."""
    key = "".join(ch for ch in text.lower() if ch.isalnum())
    return next((name for name in CLASSES if name.lower() == key), None)


@register_source
class BachSource(DatasetSource):
    """The BACH microscopy photos: four classes, one image per record.

    Labels: Normal -> normal, Benign -> benign, InSitu and Invasive -> malignant.
    ``subtype`` is the BACH class name and ``grade`` its rank in radpath's 4-class ordinal
    grading for BACH (0 Normal, 1 Benign, 2 InSitu, 3 Invasive). When
    ``microscopy_ground_truth.csv`` is present its class wins over the folder's.

    BACH publishes no patient ids, so ``patient_id`` is the image id: a patient-level split
    is then an image-level split, and images of one patient may land in different splits.
    """

    name = "bach"

    modality = "histo"

    def scan(self) -> Iterator[Record | Skipped]:
        photos = self._photos_dir()
        truth = self._ground_truth(photos)
        seen: dict[str, Path] = {}
        for path in image_files(photos, _SUFFIXES):
            item = self._record(path, photos, truth)
            if isinstance(item, Record):
                if item.image_id in seen:
                    item = Skipped(str(path), f"duplicate image id {item.image_id!r} "
                                              f"(also {seen[item.image_id]})")
                else:
                    seen[item.image_id] = path
            yield item

    def _photos_dir(self) -> Path:
        root = self.root
        for candidate in (root / "Photos", root / "ICIAR2018_BACH_Challenge" / "Photos"):
            if candidate.is_dir():
                return candidate
        if root.is_dir() and (root.name == "Photos"
                              or any((root / name).is_dir() for name in CLASSES)):
            return root
        raise RadpathError(f"{root}: no BACH layout found (expected Photos/ with "
                           f"{', '.join(CLASSES)} folders)")

    def _ground_truth(self, photos: Path) -> dict[str, str]:
        """File name -> class text from the ground-truth CSV, or {} when there is none."""
        for folder in (photos, photos.parent, self.root):
            path = folder / GROUND_TRUTH
            if path.is_file():
                with path.open(newline="", encoding="utf-8-sig") as handle:
                    rows = [row for row in csv.reader(handle) if len(row) >= 2]
                # Only rows naming an image: this also drops a header line, if one was added.
                return {row[0].strip(): row[1].strip() for row in rows
                        if row[0].strip().lower().endswith(_SUFFIXES)}
        return {}

    def _record(self, path: Path, photos: Path, truth: dict[str, str]) -> Record | Skipped:
        relative = path.relative_to(photos)
        if path.name in truth:
            text, origin = truth[path.name], GROUND_TRUTH
        elif len(relative.parts) > 1:
            text, origin = relative.parts[0], "folder"
        else:
            return Skipped(str(path), "not in a class folder and not in " + GROUND_TRUTH)
        name = _class_name(text)
        if name is None:
            return Skipped(str(path), f"unknown class {text!r} ({origin}); expected one of "
                                      f"{', '.join(CLASSES)}")
        image_id = f"bach-{path.stem.lower()}"
        return Record(
            image_id=image_id,
            patient_id=image_id,
            modality=self.modality,
            path=str(path.resolve()),
            label=LABELS[name],
            domain=self.options.domain or "bach",
            magnification=MAGNIFICATION,
            subtype=name,
            grade=str(GRADES[name]),
            source="bach",
        )
