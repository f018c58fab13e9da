"""mini-MIAS: 1024 x 1024 digitised screening films with the ``Info.txt`` index.

``Info.txt`` rows read ``REFNUM TISSUE CLASS [SEVERITY X Y RADIUS]``; an image may have
several rows (several lesions), and some abnormal rows have no coordinates (widely
distributed calcifications). MIAS puts the origin at the bottom-left corner; radpath's is
top-left, so ``row = height - Y``. Films come in pairs: ``mdbN`` belongs to patient
``(N + 1) // 2``, odd numbers are right breasts, even numbers left (MIAS notes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from radpath.data.manifest import Lesion, Record
from radpath.data.sources.base import DatasetSource, Skipped, register_source

MIAS_SIZE = 1024
TISSUE_DOMAINS = {"F": "fatty", "G": "fatty-glandular", "D": "dense-glandular"}
ABNORMALITIES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
SEVERITY_LABELS = {"B": "benign", "M": "malignant"}
_ROW = re.compile(r"^(mdb\d{3})\s+([FGD])\s+([A-Z]+)(?:\s+([BM]))?(?:\s+(\d+)\s+(\d+)\s+(\d+))?")


@dataclass
class MiasEntry:
    """Everything ``Info.txt`` says about one film."""

    ref: str
    tissue: str
    classes: list[str] = field(default_factory=list)
    severities: list[str] = field(default_factory=list)
    lesions: list[tuple[int, int, int, str]] = field(default_factory=list)  # MIAS x, y, r, class


def parse_info(path: Path) -> dict[str, MiasEntry]:
    """Parse MIAS ``Info.txt``; free-text header lines are ignored."""
    entries: dict[str, MiasEntry] = {}
    for line_number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.startswith("mdb"):
            continue
        match = _ROW.match(line.strip())
        if match is None or match.group(3) not in ABNORMALITIES:
            raise ValueError(f"{path}, line {line_number}: not a MIAS row: {line.strip()!r}")
        ref, tissue, cls, severity, x, y, r = match.groups()
        entry = entries.setdefault(ref, MiasEntry(ref, tissue))
        entry.classes.append(cls)
        if severity:
            entry.severities.append(severity)
        if x is not None:
            entry.lesions.append((int(x), int(y), int(r), cls))
    return entries


def entry_label(entry: MiasEntry) -> str:
    """Malignant if any abnormality is malignant, else benign if any is benign, else normal."""
    if "M" in entry.severities:
        return "malignant"
    if "B" in entry.severities:
        return "benign"
    return "normal" if set(entry.classes) == {"NORM"} else ""


def mias_to_top_left(x: int, y: int, r: int, height: int = MIAS_SIZE) -> tuple[int, int, int]:
    """Convert a MIAS (bottom-left origin) point to radpath's top-left origin."""
    return x, height - y, r


@register_source
class MiasSource(DatasetSource):
    """mini-MIAS films (``mdbNNN.pgm`` as distributed, or ``.png``) plus ``Info.txt``."""

    name = "mias"

    modality = "mammo"

    def scan(self) -> Iterator[Record | Skipped]:
        info = self.root / "Info.txt"
        if not info.is_file():
            raise FileNotFoundError(f"{info}: MIAS index Info.txt not found in {self.root}")
        entries = parse_info(info)
        films = self._films()
        for ref, path in sorted(films.items()):
            if ref not in entries:
                yield Skipped(str(path), "film not listed in Info.txt")
                continue
            yield self._record(entries[ref], path)
        for ref in sorted(set(entries) - set(films)):
            yield Skipped(str(self.root / f"{ref}.pgm"), "listed in Info.txt but no image file")

    def _films(self) -> dict[str, Path]:
        films: dict[str, Path] = {}
        for path in sorted(self.root.iterdir()):
            if re.fullmatch(r"mdb\d{3}", path.stem) and path.suffix.lower() in (".pgm", ".png"):
                films.setdefault(path.stem, path)  # PGM first (sorted), PNG as the fallback
        return films

    def _record(self, entry: MiasEntry, path: Path) -> Record:
        number = int(entry.ref[3:])
        lesions = tuple(Lesion(*mias_to_top_left(x, y, r), kind) for x, y, r, kind in
                        entry.lesions)
        abnormal = [c for c in entry.classes if c != "NORM"]
        return Record(
            image_id=entry.ref,
            patient_id=f"mias-{(number + 1) // 2:03d}",
            modality="mammo",
            path=str(path.resolve()),
            label=entry_label(entry),
            domain=self.options.domain or TISSUE_DOMAINS[entry.tissue],
            view="MLO",
            laterality="R" if number % 2 else "L",
            subtype="+".join(dict.fromkeys(abnormal)),
            source="mias",
            lesions=lesions,
        )
