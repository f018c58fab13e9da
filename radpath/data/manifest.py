"""The manifest: one row per image, the single currency between ingest, training and evaluation.

Stored as CSV (always) or Parquet (when pyarrow is installed). Validated on read: every
error names the manifest, the row (1-based, header excluded) and the column.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from radpath.atomic import atomic_path
from radpath.errors import ManifestError

MODALITIES = ("mammo", "histo")
LABELS = ("normal", "benign", "malignant")
PAIRING_MODES = ("true", "pseudo", "unpaired")
REQUIRED_COLUMNS = ("image_id", "patient_id", "modality", "path", "label", "domain")
OPTIONAL_COLUMNS = (
    "view", "laterality", "magnification", "subtype", "grade", "source", "lesions",
    "pairing", "pair_id", "split", "id_scheme",
)
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS


@dataclass(frozen=True)
class Lesion:
    """A lesion circle in pixels of the original image, origin top-left."""

    x: float
    y: float
    r: float
    kind: str = ""

    def to_json(self) -> dict[str, float | str]:
        out: dict[str, float | str] = {"x": self.x, "y": self.y, "r": self.r}
        if self.kind:
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class Record:
    """One image of one patient. Empty strings mean "unknown"."""

    image_id: str
    patient_id: str
    modality: str
    path: str
    label: str = ""
    domain: str = ""
    view: str = ""
    laterality: str = ""
    magnification: str = ""
    subtype: str = ""
    grade: str = ""
    source: str = ""
    lesions: tuple[Lesion, ...] = field(default_factory=tuple)
    pairing: str = ""
    pair_id: str = ""
    split: str = ""
    # How image_id/patient_id were made: "" as the source gave them, or the pseudonym
    # scheme of `radpath ingest --pseudonymise` (radpath.data.ingest.ID_SCHEME).
    id_scheme: str = ""

    def with_(self, **changes: object) -> Record:
        """A copy with ``changes`` applied (records are immutable)."""
        return replace(self, **changes)


def _check_number(value: str, *, row: int, column: str, source: str | None) -> None:
    try:
        number = float(value)
    except ValueError:
        raise ManifestError(f"expected a number, got {value!r}", source=source, row=row,
                            column=column) from None
    if not math.isfinite(number) or number < 0:
        raise ManifestError(f"expected a finite number >= 0, got {value!r}", source=source,
                            row=row, column=column)


def parse_lesions(text: str, *, row: int = 0, source: str | None = None) -> tuple[Lesion, ...]:
    """Parse the ``lesions`` column: a JSON list of ``{"x", "y", "r"}`` objects."""
    if not text.strip():
        return ()
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not valid JSON ({exc.msg})", source=source, row=row,
                            column="lesions") from None
    if not isinstance(items, list):
        raise ManifestError("expected a JSON list of {x, y, r} objects", source=source, row=row,
                            column="lesions")
    lesions = []
    for item in items:
        if not isinstance(item, dict) or not {"x", "y", "r"} <= item.keys():
            raise ManifestError(f"each lesion needs keys x, y, r; got {item!r}", source=source,
                                row=row, column="lesions")
        for key in ("x", "y", "r"):
            if isinstance(item[key], bool) or not isinstance(item[key], int | float):
                raise ManifestError(f"lesion {key} must be a number, got {item[key]!r}",
                                    source=source, row=row, column="lesions")
            _check_number(str(item[key]), row=row, column="lesions", source=source)
        lesions.append(Lesion(float(item["x"]), float(item["y"]), float(item["r"]),
                              str(item.get("kind", ""))))
    return tuple(lesions)


def validate_record(raw: dict[str, str], *, row: int, source: str | None = None) -> Record:
    """Turn one raw CSV row into a :class:`Record`, or raise a :class:`ManifestError`."""
    for column in REQUIRED_COLUMNS:
        if column not in raw or raw[column] is None:
            raise ManifestError("required column is missing", source=source, row=row,
                                column=column)
    values = {c: (raw.get(c) or "").strip() for c in COLUMNS}
    for column in ("image_id", "patient_id", "path"):
        if not values[column]:
            raise ManifestError("must not be empty", source=source, row=row, column=column)
    if values["modality"] not in MODALITIES:
        raise ManifestError(f"expected one of {', '.join(MODALITIES)}; got "
                            f"{values['modality']!r}", source=source, row=row, column="modality")
    if values["label"] and values["label"] not in LABELS:
        raise ManifestError(f"expected one of {', '.join(LABELS)} or empty; got "
                            f"{values['label']!r}", source=source, row=row, column="label")
    if values["pairing"] and values["pairing"] not in PAIRING_MODES:
        raise ManifestError(f"expected one of {', '.join(PAIRING_MODES)} or empty; got "
                            f"{values['pairing']!r}", source=source, row=row, column="pairing")
    for column in ("magnification", "grade"):
        if values[column]:
            _check_number(values[column], row=row, column=column, source=source)
    lesions = parse_lesions(values.pop("lesions"), row=row, source=source)
    return Record(**values, lesions=lesions)


def record_to_row(record: Record) -> dict[str, str]:
    """The CSV row of a record (lesions as compact JSON)."""
    row = {k: v for k, v in asdict(record).items() if k != "lesions"}
    row["lesions"] = (json.dumps([lesion.to_json() for lesion in record.lesions],
                                 separators=(",", ":")) if record.lesions else "")
    return {c: str(row[c]) for c in COLUMNS}


class Manifest(Sequence[Record]):
    """An ordered, validated collection of records with unique ``image_id``s."""

    def __init__(self, records: Iterable[Record], *, source: str | None = None) -> None:
        self.records: list[Record] = list(records)
        self.source = source
        seen: dict[str, int] = {}
        for index, record in enumerate(self.records, start=1):
            if record.image_id in seen:
                raise ManifestError(f"duplicate image_id {record.image_id!r} (first at row "
                                    f"{seen[record.image_id]})", source=source, row=index,
                                    column="image_id")
            seen[record.image_id] = index

    def __getitem__(self, index):  # type: ignore[override]
        return self.records[index]

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def patients(self) -> list[str]:
        """Patient ids in order of first appearance."""
        return list(dict.fromkeys(r.patient_id for r in self.records))

    def filter(self, **equals: str) -> Manifest:
        """The records whose fields equal every given value."""
        keep = [r for r in self.records if all(getattr(r, k) == v for k, v in equals.items())]
        return Manifest(keep, source=self.source)

    def resolve_path(self, record: Record) -> Path:
        """The record's image path; relative paths are relative to the manifest file."""
        path = Path(record.path)
        if path.is_absolute() or self.source is None:
            return path
        return Path(self.source).parent / path


def read_manifest(path: str | Path) -> Manifest:
    """Read and validate a CSV (or ``.parquet``) manifest."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError("manifest file not found", source=path)
    rows = _read_parquet(path) if path.suffix == ".parquet" else _read_csv(path)
    records = [validate_record(raw, row=i, source=str(path)) for i, raw in enumerate(rows, 1)]
    return Manifest(records, source=str(path))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ManifestError(f"required column(s) missing from the header: "
                                f"{', '.join(missing)} (found: {', '.join(header) or 'nothing'})",
                                source=path, column=missing[0])
        return list(reader)


def _read_parquet(path: Path) -> list[dict[str, str]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ManifestError("reading Parquet needs pyarrow (pip install pyarrow)",
                            source=path) from None
    table = pq.read_table(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ManifestError(f"required column(s) missing: {', '.join(missing)}", source=path,
                            column=missing[0])
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in table.to_pylist()]


def write_manifest(records: Iterable[Record], path: str | Path) -> Path:
    """Write records atomically (temporary file, then rename) as CSV or Parquet."""
    path = Path(path)
    rows = [record_to_row(r) for r in records]
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            _write_parquet(rows, tmp)
        else:
            with tmp.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
                writer.writeheader()
                writer.writerows(rows)
    return path


def _write_parquet(rows: list[dict[str, str]], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ManifestError("writing Parquet needs pyarrow (pip install pyarrow)") from None
    columns = {c: [row[c] for row in rows] for c in COLUMNS}
    pq.write_table(pa.table(columns), path)


def record_fields() -> list[str]:
    """Names of the record fields, in manifest column order."""
    return [f.name for f in fields(Record)]
