"""CBIS-DDSM (Curated Breast Imaging Subset of DDSM): digitised-film mammograms as DICOM.

Everything comes from the DICOM headers (read without pixels). The PatientID of a full
mammogram reads like ``Mass-Test_P_00173_LEFT_CC``: abnormality set, official split,
patient, breast side and view. CBIS-DDSM also ships ROI masks and cropped lesions (their
PatientIDs end in ``_1``, ``_2``... and their SeriesDescription says so): those are skipped,
only full mammograms become records.

Labels come from the CBIS-DDSM description CSVs (``options.descriptions``; pathology
MALIGNANT -> malignant, BENIGN and BENIGN_WITHOUT_CALLBACK -> benign, the worst abnormality
of an image wins), else from a user CSV (``options.labels``, see :class:`LabelTable`), else
they stay unknown (``""``).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath

import pydicom

from radpath.data.io import read_dicom_header
from radpath.data.manifest import LABELS, Record
from radpath.data.sources.base import DatasetSource, Skipped, image_files, register_source
from radpath.errors import ImageReadError, ManifestError

CASE_PATTERN = re.compile(
    r"^(?P<set>Mass|Calc)-(?P<split>Training|Test)_(?P<patient>P_\d+)"
    r"(?:_(?P<side>LEFT|RIGHT)_(?P<view>CC|MLO))?(?P<rest>.*)$"
)
FULL_MAMMOGRAM = "full mammogram images"
NOT_FULL = "ROI mask / cropped image, not a full mammogram"
PATHOLOGY_LABELS = {"MALIGNANT": "malignant", "BENIGN": "benign",
                    "BENIGN_WITHOUT_CALLBACK": "benign"}
# Worst label wins when an image carries several abnormalities.
SEVERITY = {"": 0, "normal": 1, "benign": 2, "malignant": 3}
SIDES = {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}


def worst(*labels: str) -> str:
    """The most severe of ``labels`` (``""`` when all are unknown)."""
    return max(labels, key=SEVERITY.__getitem__, default="")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header (lower-cased, ``_`` as space) and rows of a CSV; errors name the file."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ManifestError(f"cannot read the CSV ({exc})", source=path) from exc
    names = {name: name.strip().lower().replace("_", " ") for name in header}
    clean = [{names[k]: (v or "").strip() for k, v in row.items() if k in names} for row in rows]
    return list(names.values()), clean


def _require(header: list[str], columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise ManifestError(f"required column(s) missing: {', '.join(missing)} "
                            f"(found: {', '.join(header) or 'nothing'})", source=path,
                            column=missing[0])


@dataclass
class LabelTable:
    """Labels a user gives in a CSV: a ``label`` column plus ``image_id``, ``path`` or
    ``patient_id`` (any or all; an empty cell is ignored).

    A ``path`` entry matches a file or any of its parent folders, compared from the end:
    ``sfm-benign-0`` labels every file under a folder of that name, ``cases/a.dcm`` that one
    file. The nearest match wins; ``image_id`` beats ``path``, which beats ``patient_id``.
    """

    by_image: dict[str, str] = field(default_factory=dict)
    by_path: dict[tuple[str, ...], str] = field(default_factory=dict)
    by_patient: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> LabelTable:
        """Read and validate a labels CSV."""
        header, rows = _read_csv(path)
        _require(header, ["label"], path)
        keys = [k for k in ("image id", "path", "patient id") if k in header]
        if not keys:
            raise ManifestError("needs a 'path', 'patient_id' or 'image_id' column next to "
                                "'label'", source=path, column="label")
        table = cls()
        for number, row in enumerate(rows, start=1):
            label = row["label"].lower()
            if label not in LABELS and label != "":
                raise ManifestError(f"expected one of {', '.join(LABELS)} or empty; got "
                                    f"{row['label']!r}", source=path, row=number, column="label")
            table._add(row, label)
        return table

    def _add(self, row: dict[str, str], label: str) -> None:
        if row.get("image id"):
            self.by_image[row["image id"]] = label
        if row.get("path"):
            self.by_path[PurePath(row["path"].replace("\\", "/")).parts] = label
        if row.get("patient id"):
            self.by_patient[row["patient id"]] = label

    def lookup(self, *, image_id: str, patient_id: str, path: Path) -> str:
        """The label for one image, or ``""`` when the table does not mention it."""
        if image_id in self.by_image:
            return self.by_image[image_id]
        for candidate in (path, *path.parents):
            parts = candidate.parts
            for start in range(len(parts) - 1, -1, -1):  # shortest suffix first
                if parts[start:] in self.by_path:
                    return self.by_path[parts[start:]]
        return self.by_patient.get(patient_id, "")


def read_descriptions(paths: Iterable[Path]) -> dict[tuple[str, str, str], str]:
    """Worst pathology per image, keyed ``(patient_id, side, view)`` e.g. ``("P_00173", "L",
    "CC")``, from CBIS-DDSM's ``*_case_description_*_set.csv`` files."""
    labels: dict[tuple[str, str, str], str] = {}
    required = ("patient id", "left or right breast", "image view", "pathology")
    for path in paths:
        header, rows = _read_csv(path)
        _require(header, required, path)
        for number, row in enumerate(rows, start=1):
            label = PATHOLOGY_LABELS.get(row["pathology"].upper())
            side = SIDES.get(row["left or right breast"].upper())
            if label is None or side is None:
                column = "pathology" if label is None else "left or right breast"
                raise ManifestError(f"unexpected value {row[column]!r}", source=path,
                                    row=number, column=column)
            key = (row["patient id"], side, row["image view"].upper())
            labels[key] = worst(labels.get(key, ""), label)
    return labels


@dataclass(frozen=True)
class Case:
    """What a CBIS-DDSM header says about one image."""

    subtype: str  # "mass" or "calc"
    split: str  # "Training" or "Test"
    patient_id: str
    laterality: str  # "L", "R" or ""
    view: str  # "CC", "MLO" or ""
    full_mammogram: bool

    @property
    def image_id(self) -> str:
        side = {"L": "LEFT", "R": "RIGHT"}.get(self.laterality, "")
        parts = [f"{self.subtype.capitalize()}-{self.split}_{self.patient_id}", side, self.view]
        return "_".join(p for p in parts if p)


def parse_case(ds: pydicom.Dataset) -> Case | None:
    """The case a header describes, or None when its PatientID is not CBIS-DDSM's."""
    match = CASE_PATTERN.match(str(ds.get("PatientID", "") or "").strip())
    if match is None:
        return None
    side = match["side"] or str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
    view = match["view"] or str(ds.get("ViewPosition", "") or "")
    description = str(ds.get("SeriesDescription", "") or "").strip().lower()
    # Without a SeriesDescription, an abnormality number after the view marks ROI / crop.
    full = description == FULL_MAMMOGRAM if description else not match["rest"]
    return Case("mass" if match["set"] == "Mass" else "calc", match["split"], match["patient"],
                SIDES.get(side.strip().upper(), ""), view.strip().upper(), full)


@register_source
class CbisDdsmSource(DatasetSource):
    """CBIS-DDSM full mammograms: every ``*.dcm`` under the root, read header only."""

    name = "cbis-ddsm"

    modality = "mammo"

    def scan(self) -> Iterator[Record | Skipped]:
        descriptions = read_descriptions(self.options.descriptions)
        table = LabelTable.read(self.options.labels) if self.options.labels else LabelTable()
        seen: dict[str, int] = {}
        for path in image_files(self.root, (".dcm", ".dicom")):
            item = self._record(path.absolute(), descriptions, table)
            if isinstance(item, Record):
                seen[item.image_id] = seen.get(item.image_id, 0) + 1
                if seen[item.image_id] > 1:  # the same image twice (a copied file)
                    item = item.with_(image_id=f"{item.image_id}-{seen[item.image_id]}")
            yield item

    def _record(self, path: Path, descriptions: dict[tuple[str, str, str], str],
                table: LabelTable) -> Record | Skipped:
        try:
            case = parse_case(read_dicom_header(path))
        except ImageReadError as exc:
            return Skipped(str(path), exc.reason)
        if case is None:
            # The PatientID itself is not shown: it may be a real identifier.
            return Skipped(str(path), "PatientID does not follow the CBIS-DDSM pattern "
                                      "'Mass-Test_P_00173_LEFT_CC'")
        if not case.full_mammogram:
            return Skipped(str(path), NOT_FULL)
        label = descriptions.get((case.patient_id, case.laterality, case.view), "")
        label = label or table.lookup(image_id=case.image_id, patient_id=case.patient_id,
                                      path=path)
        return Record(
            image_id=case.image_id, patient_id=case.patient_id, modality=self.modality,
            path=str(path), label=label, domain=self.options.domain or "cbis-ddsm",
            view=case.view, laterality=case.laterality, subtype=case.subtype,
            source="cbis-ddsm",
        )
