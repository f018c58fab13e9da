"""A user's own manifest (CSV), validated row by row.

A bad row (unknown label, missing value, malformed lesions) is skipped with the reason,
naming the row and column; a header without the required columns stops the ingest, since
then no row can be right.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from radpath.data.manifest import REQUIRED_COLUMNS, Record, validate_record
from radpath.data.sources.base import DatasetSource, Skipped, register_source
from radpath.errors import ManifestError


@register_source
class CsvManifestSource(DatasetSource):
    """Reads ``PATH`` as a manifest; relative image paths are relative to the CSV's folder."""

    name = "csv"

    modality = ""

    def scan(self) -> Iterator[Record | Skipped]:
        if not self.root.is_file():
            raise ManifestError("manifest file not found", source=self.root)
        with self.root.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise ManifestError(f"required column(s) missing from the header: "
                                    f"{', '.join(missing)}", source=self.root, column=missing[0])
            for row_number, raw in enumerate(reader, start=1):
                yield self._validated(raw, row_number)

    def _validated(self, raw: dict[str, str], row_number: int) -> Record | Skipped:
        try:
            record = validate_record(raw, row=row_number, source=str(self.root))
        except ManifestError as exc:
            return Skipped(raw.get("path") or f"{self.root} row {row_number}", str(exc))
        path = Path(record.path)
        if not path.is_absolute():
            path = self.root.parent / path
        changes: dict[str, str] = {"path": str(path.resolve())}
        if self.options.domain:
            changes["domain"] = self.options.domain
        return record.with_(**changes)
