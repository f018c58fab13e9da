"""INbreast (Moreira et al., Acad Radiol 2012): full-field digital mammograms, Portugal.

The documented layout::

    root/
      AllDICOMs/20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm   (file number _ patient hash
                                                                _ MG _ side _ view _ ANON)
      AllXML/20586908.xml                                    (OsiriX ROIs, optional)
      INbreast.csv                                           (the metadata table)

``INbreast.csv`` is the dataset's ``INbreast.xls`` saved as CSV (semicolon- or
comma-separated), columns ``Patient ID;Patient age;Laterality;View;Acquisition date;
File Name;ACR;Bi-Rads``. Only CSV is read: export the ``.xls`` once. Another location may be
given as the first ``.csv`` of ``options.descriptions``.

Labels follow the common convention for INbreast: Bi-Rads 1 -> normal; 2 and 3 -> benign;
4 (4a/4b/4c), 5 and 6 -> malignant; anything else (0, missing) -> unknown. The ACR breast
density goes into ``subtype`` as ``ACR1``..``ACR4``. Only file names and the table are read,
never the DICOMs: corrupt files are caught when ingest decodes them.

Lesions come from ``AllXML/<file number>.xml``: each ROI's ``Point_px`` outline becomes a
circle centred on the mean of its points with the largest point distance as radius (zero for
a single-point calcification). A missing or unparsable XML leaves the lesions empty.
"""

from __future__ import annotations

import csv
import math
import plistlib
import re
from collections.abc import Iterator
from pathlib import Path
from xml.parsers.expat import ExpatError

from radpath.data.manifest import Lesion, Record
from radpath.data.sources.base import DatasetSource, Skipped, image_files, register_source
from radpath.errors import ManifestError

FILE_PATTERN = re.compile(
    r"^(?P<number>\d+)_(?P<patient>[0-9A-Za-z]+)_MG_(?P<side>[LR])_(?P<view>[A-Za-z]+)_ANON$"
)
TABLE_NAME = "inbreast.csv"
BIRADS_LABELS = {"1": "normal", "2": "benign", "3": "benign", "4": "malignant",
                 "5": "malignant", "6": "malignant"}
_POINT = re.compile(r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def birads_label(value: str) -> str:
    """``"4b"`` -> ``"malignant"``: the label of a Bi-Rads category (``""`` if unknown)."""
    return BIRADS_LABELS.get(value.strip()[:1], "")


def _whole(value: str) -> str:
    """``"22678622.0"`` (a spreadsheet export) -> ``"22678622"``."""
    value = value.strip()
    return value[:-2] if value.endswith(".0") else value


def read_table(path: Path) -> dict[str, dict[str, str]]:
    """Rows of ``INbreast.csv`` keyed by file number, column names lower-cased."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read the INbreast table ({exc})", source=path) from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # Excel exports are often Latin-1
    lines = text.splitlines()
    delimiter = ";" if lines and ";" in lines[0] else ","
    reader = csv.DictReader(lines, delimiter=delimiter)
    header = [name.strip().lower() for name in reader.fieldnames or []]
    for column in ("file name", "bi-rads"):
        if column not in header:
            raise ManifestError(f"required column missing (found: {', '.join(header)})",
                                source=path, column=column)
    rows = ({k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            for row in reader)
    return {_whole(row["file name"]): row for row in rows if row.get("file name")}


def read_lesions(path: Path) -> tuple[Lesion, ...]:
    """Circles around the ROIs of one OsiriX XML file; ``()`` when absent or unparsable."""
    try:
        with path.open("rb") as handle:
            rois = plistlib.load(handle)["Images"][0]["ROIs"]
        return tuple(lesion for roi in rois if (lesion := _roi_circle(roi)) is not None)
    except (OSError, plistlib.InvalidFileException, ExpatError, KeyError, IndexError,
            TypeError, ValueError):
        return ()


def _roi_circle(roi: dict) -> Lesion | None:
    points = [tuple(float(v) for v in _POINT.findall(text)[:2]) for text in roi["Point_px"]]
    points = [p for p in points if len(p) == 2]
    if not points:
        return None
    x = sum(p[0] for p in points) / len(points)
    y = sum(p[1] for p in points) / len(points)
    r = max(math.hypot(px - x, py - y) for px, py in points)
    return Lesion(round(x, 2), round(y, 2), round(r, 2), str(roi.get("Name", "")).lower())


@register_source
class InbreastSource(DatasetSource):
    """INbreast's ``AllDICOMs`` + ``INbreast.csv`` (+ ``AllXML``) layout."""

    name = "inbreast"

    modality = "mammo"

    def scan(self) -> Iterator[Record | Skipped]:
        table_path = self._table_path()
        table = read_table(table_path) if table_path else {}
        folder = self.root / "AllDICOMs"
        for path in image_files(folder if folder.is_dir() else self.root, (".dcm",)):
            yield self._record(path.absolute(), table)

    def _table_path(self) -> Path | None:
        given = [p for p in self.options.descriptions if p.suffix.lower() == ".csv"]
        if given:
            return given[0]
        found = [p for p in self.root.glob("*") if p.name.lower() == TABLE_NAME]
        return found[0] if found else None

    def _record(self, path: Path, table: dict[str, dict[str, str]]) -> Record | Skipped:
        match = FILE_PATTERN.match(path.stem)
        if match is None:
            return Skipped(str(path), "file name does not follow INbreast's "
                                      "'<number>_<patient>_MG_<L|R>_<view>_ANON.dcm'")
        row = table.get(match["number"], {})
        acr = _whole(row.get("acr", ""))
        return Record(
            image_id=match["number"], patient_id=match["patient"], modality=self.modality,
            path=str(path), label=birads_label(row.get("bi-rads", "")),
            domain=self.options.domain or "inbreast", view=match["view"].upper(),
            laterality=match["side"], subtype=f"ACR{acr}" if acr else "", source="inbreast",
            lesions=read_lesions(self.root / "AllXML" / f"{match['number']}.xml"),
        )
