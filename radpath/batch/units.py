"""Units: the records of one batch row (a true pair, a pseudo-pair or one patient).

A unit is a true pair or a pseudo-pair (records sharing a ``pair_id``), or else one
patient; :func:`build_units` groups a manifest's records into units, in a stable order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from radpath.batch.keys import UNPAIRED
from radpath.data.manifest import Record
from radpath.data.pairing import patient_label

T = TypeVar("T")


@dataclass(frozen=True)
class Unit:
    """The records of one unit and its unit-level metadata."""

    unit_id: str
    mammo: tuple[Record, ...]
    histo: tuple[Record, ...]
    label: str
    grade: int
    pairing: str
    mammo_domain: str
    histo_domain: str
    patient_ids: tuple[str, ...]


def _unit_key(record: Record) -> str:
    if record.pairing in ("true", "pseudo") and record.pair_id:
        return record.pair_id
    return record.patient_id


def _grade(records: Sequence[Record], column: str) -> int:
    """The highest grade among the records, or -1 when none has one."""
    grades = [int(float(v)) for r in records if (v := str(getattr(r, column, "")).strip())]
    return max(grades, default=-1)


def count_grades(records: Sequence[Record], column: str = "grade") -> int:
    """Ordered grades a cohort uses: its highest grade + 1, or 0 when none has a grade."""
    return _grade(records, column) + 1


def build_units(records: Sequence[Record], *, max_views: int,
                grade_column: str = "grade") -> list[Unit]:
    """Group records into units, in order of first appearance.

    Mammograms are ordered by (laterality, view, image id) and cut to ``max_views``;
    histology images are ordered by image id.
    """
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(_unit_key(record), []).append(record)
    units = []
    for unit_id, members in groups.items():
        mammo = sorted((r for r in members if r.modality == "mammo"),
                       key=lambda r: (r.laterality, r.view, r.image_id))[:max_views]
        histo = sorted((r for r in members if r.modality == "histo"), key=lambda r: r.image_id)
        units.append(Unit(
            unit_id=unit_id, mammo=tuple(mammo), histo=tuple(histo),
            label=patient_label(members), grade=_grade(members, grade_column),
            pairing=members[0].pairing or UNPAIRED,
            mammo_domain=mammo[0].domain if mammo else "",
            histo_domain=histo[0].domain if histo else "",
            patient_ids=tuple(dict.fromkeys(r.patient_id for r in members))))
    return units


def interleave_ranks(stacks: Sequence[Sequence[T]]) -> list[T]:
    """Tiles of several images, rank by rank: every image's best tile, then the second...

    The one order of a unit's tiles, so that a prediction and its explanation that keep the
    first ``eval_tiles`` keep the same ones.
    """
    order = sorted((rank, k) for k, s in enumerate(stacks) for rank in range(len(s)))
    return [stacks[k][rank] for rank, k in order]

