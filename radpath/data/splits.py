"""Patient-grouped, label-stratified splits; cross-validation and leave-one-domain-out
folds; leakage checks.

The unit of splitting is never an image. It is the patient, or for a pseudo-pair the two
patients of the pair, so that paired training finds both halves of a pair in the same split.
Images of one patient in two splits would let a model recognise the patient instead of the
disease: :func:`check_leakage` refuses that loudly.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from radpath.data.manifest import Manifest, Record, record_fields
from radpath.data.pairing import group_by_patient, patient_label
from radpath.errors import RadpathError

MAX_LISTED = 10


class LeakageError(RadpathError):
    """A patient appears in more than one split.

    Attributes:
        patients: each leaking patient id with the names of the splits it appears in.
    """

    def __init__(self, patients: Mapping[str, Sequence[str]]) -> None:
        self.patients = {p: tuple(s) for p, s in patients.items()}
        listed = [f"{p} (in {', '.join(s)})" for p, s in list(self.patients.items())[:MAX_LISTED]]
        more = len(self.patients) - len(listed)
        tail = f", and {more} more" if more else ""
        super().__init__(f"patient leakage: {len(self.patients)} patient(s) appear in more "
                         f"than one split: {'; '.join(listed)}{tail}")


@dataclass(frozen=True)
class Fold:
    """One fold: leave-one-domain-out, or cross-validation.

    Attributes:
        name: the held-out value of the fold's column (e.g. the domain), or ``fold-i``.
        train: the records trained on (for LODO: of every patient with no image in the
            held-out value).
        test: the held-out records (for LODO: every record of every patient with at least
            one image in the held-out value).
    """

    name: str
    train: Manifest
    test: Manifest


def split_patients(manifest: Manifest, *, fractions: Sequence[float] = (0.7, 0.15, 0.15),
                   seed: int = 0, names: Sequence[str] = ("train", "val", "test"),
                   one_per_stratum: bool = True) -> Manifest:
    """Assign every record a ``split``, grouped by patient, stratified by label and domain.

    Units (a patient, or the two patients of a pseudo-pair) are stratified by modality
    (``mammo``, ``histo`` or ``histo+mammo``), patient label and domain (the mammogram's
    domain for a unit with both modalities): a small cohort split by label alone can put
    most malignant cases of one domain in training and of another in validation, and a
    model that learns the domain (breast density, a staining batch) then scores below
    chance on validation. Within each stratum the units are shuffled, grouped by staining
    batch (the histology domain of pseudo-pairs) and shared out in proportion to
    ``fractions``, each split's units spread along that order so that every batch is spread
    too; with ``one_per_stratum``, a stratum with at least as many units as there are
    non-empty splits gives each of them at least one unit. Rounding left over by one stratum
    is carried into the next, so small strata do not all round towards the largest split.

    Args:
        manifest: the records to split.
        fractions: relative sizes of the splits (normalised; zeros allowed).
        seed: seed of the :class:`numpy.random.Generator` shuffling each stratum.
        names: the split names, one per fraction.
        one_per_stratum: give every stratum one unit of each split it can. Set it to False
            for a small split beside a large one (an inner validation share) in a cohort of
            small strata: there the rule, not ``fractions``, decides the sizes (strata of
            two or three units put about half the cohort in the small split).

    Returns:
        A new manifest with the same records in the same order and ``split`` set.

    Raises:
        ValueError: if fractions and names differ in length, a fraction is negative, all are
            zero, or a name is repeated or empty.
    """
    weights = _check_fractions(fractions, names)
    records_of = _units(manifest)
    strata = _strata(records_of)
    rng = np.random.default_rng(seed)
    carry = [0.0] * len(weights)
    split_of_unit: dict[str, str] = {}
    # Sorted strata and units: the result depends on the seed and the data, not row order.
    for key in sorted(strata):
        units = _ordered_members(strata[key], records_of, rng)
        counts, carry = _allocate(len(units), weights, carry, one_per_stratum)
        for unit, index in zip(units, _interleave(counts), strict=True):
            split_of_unit[unit] = names[index]
    return Manifest((r.with_(split=split_of_unit[_unit_of(r)]) for r in manifest),
                    source=manifest.source)


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> list[float]:
    if len(fractions) != len(names):
        raise ValueError(f"fractions {tuple(fractions)} and names {tuple(names)} differ in length")
    if any(not math.isfinite(f) or f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be finite, >= 0 and not all zero; got "
                         f"{tuple(fractions)}")
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"split names must be distinct and non-empty; got {tuple(names)}")
    total = sum(fractions)
    return [f / total for f in fractions]


def unit_count(manifest: Manifest) -> int:
    """How many units :func:`split_patients` shares out (a pseudo-pair counts once)."""
    return len(_units(manifest))


def _unit_of(record: Record) -> str:
    # A pseudo-pair is split as one unit so that both partners land in the same split.
    if record.pairing == "pseudo" and record.pair_id:
        return f"pair:{record.pair_id}"
    return f"patient:{record.patient_id}"


def _units(manifest: Manifest) -> dict[str, list[Record]]:
    units: dict[str, list[Record]] = defaultdict(list)
    for record in manifest:
        units[_unit_of(record)].append(record)
    return dict(units)


def _strata(records_of: Mapping[str, list[Record]]) -> dict[tuple[str, str, str], list[str]]:
    """Units grouped by :func:`_stratum`."""
    strata: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for unit, records in records_of.items():
        strata[_stratum(records)].append(unit)
    return strata


def _stratum(records: list[Record]) -> tuple[str, str, str]:
    modalities = "+".join(sorted({r.modality for r in records}))
    domain = next((r.domain for r in records if r.modality == "mammo"), records[0].domain)
    return modalities, patient_label(records), domain


def _ordered_members(members: list[str], records_of: Mapping[str, list[Record]],
                     rng: np.random.Generator) -> list[str]:
    """A stratum's units shuffled, then grouped by their histology domain (stable).

    The stratum fixes the mammogram's domain; a pseudo-pair also carries a staining batch.
    Grouping by it before the units are interleaved over the splits (or dealt to folds)
    spreads each batch over them, where a plain shuffle can leave most benign images of one
    batch in training and its malignant ones in validation.
    """
    members = sorted(members)
    members = [members[i] for i in rng.permutation(len(members))]
    return sorted(members, key=lambda unit: min(
        (r.domain for r in records_of[unit] if r.modality == "histo"), default=""))


def _interleave(counts: list[int]) -> list[int]:
    """Split indices for ``sum(counts)`` ordered units, each split taking its units spread
    evenly along the order (the one furthest behind its share goes next)."""
    total = sum(counts)
    taken = [0] * len(counts)
    order = []
    for position in range(1, total + 1):
        behind = [(c * position / total - t, -j) for j, (c, t) in
                  enumerate(zip(counts, taken, strict=True)) if t < c]
        j = -max(behind)[1]
        taken[j] += 1
        order.append(j)
    return order


def _allocate(n: int, weights: list[float], carry: list[float],
              one_per_stratum: bool) -> tuple[list[int], list[float]]:
    """Cut ``n`` units by ``weights``; ``carry`` is each split's rounding debt so far."""
    ideal = [n * w for w in weights]
    counts = [math.floor(x) for x in ideal]
    if one_per_stratum and n >= sum(w > 0 for w in weights):
        counts = [max(c, 1) if w > 0 else c for c, w in zip(counts, weights, strict=True)]
    want = [i + d for i, d in zip(ideal, carry, strict=True)]
    while sum(counts) > n:
        # Take back from the split most over its due that can spare a unit.
        spare = [j for j, c in enumerate(counts) if c > 1]
        j = max(spare, key=lambda k: (counts[k] - want[k], -k))
        counts[j] -= 1
    while sum(counts) < n:
        eligible = [j for j, w in enumerate(weights) if w > 0]
        j = max(eligible, key=lambda k: (want[k] - counts[k], -k))
        counts[j] += 1
    return counts, [w - c for w, c in zip(want, counts, strict=True)]


def patient_folds(manifest: Manifest, k: int, *, seed: int = 0) -> list[Fold]:
    """``k`` cross-validation folds, grouped by patient (a pseudo-pair is one unit).

    Units are stratified as in :func:`split_patients` (modality, label, domain): within each
    stratum they are shuffled and dealt to the folds in turn, and the dealing carries on
    from one stratum to the next, so fold sizes differ by at most one unit and every
    stratum is spread over the folds as evenly as it can be. Fold ``i`` tests the units
    dealt to it and trains on all the others; every unit is tested exactly once.

    Args:
        manifest: the records to fold (their ``split`` is ignored).
        k: number of folds, at least 2 and at most the number of units.
        seed: seed of the :class:`numpy.random.Generator` shuffling each stratum.

    Returns:
        The folds, named ``fold-1`` ... ``fold-k``.

    Raises:
        ValueError: if ``k`` is below 2 or above the number of units.
    """
    units = _units(manifest)
    if not 2 <= k <= len(units):
        raise ValueError(f"cross-validation needs 2 <= folds <= units ({len(units)}), got {k}")
    strata = _strata(units)
    rng = np.random.default_rng(seed)
    fold_of_unit: dict[str, int] = {}
    dealt = 0
    for key in sorted(strata):
        for unit in _ordered_members(strata[key], units, rng):
            fold_of_unit[unit] = dealt % k
            dealt += 1
    folds = []
    for index in range(k):
        test = [r for r in manifest if fold_of_unit[_unit_of(r)] == index]
        train = [r for r in manifest if fold_of_unit[_unit_of(r)] != index]
        folds.append(Fold(f"fold-{index + 1}", Manifest(train, source=manifest.source),
                          Manifest(test, source=manifest.source)))
    return folds


def group_folds(manifest: Manifest, group_of: Callable[[Record], str]) -> list[Fold]:
    """One fold per group: its units tested, every other unit trained on.

    Unlike :func:`lodo_folds`, every unit is tested exactly once, so the out-of-fold
    predictions pool like k-fold cross-validation's: a pooled leave-one-group-out score over
    the whole cohort (e.g. grouped by staining batch), rather than one small score per group.

    Args:
        manifest: the records to fold (their ``split`` is ignored).
        group_of: the group of a record; every record of a unit must share it.

    Returns:
        Folds named and sorted by group.

    Raises:
        RadpathError: if a unit's records fall in two groups (naming it and them) or in
            none (an empty group), or if there are fewer than 2 groups.
    """
    group_of_unit: dict[str, str] = {}
    for unit, records in _units(manifest).items():
        groups = sorted({group_of(r) for r in records})
        if "" in groups:
            raise RadpathError(f"unit {unit} has a record without a group (an empty value)")
        if len(groups) > 1:
            raise RadpathError(f"unit {unit} has records in groups {', '.join(groups)}: "
                               "a group must hold whole patients")
        group_of_unit[unit] = groups[0]
    groups = sorted(set(group_of_unit.values()))
    if len(groups) < 2:
        raise RadpathError(f"leave-one-group-out needs at least 2 groups; found {groups}")
    return [Fold(group,
                 Manifest([r for r in manifest if group_of_unit[_unit_of(r)] != group],
                          source=manifest.source),
                 Manifest([r for r in manifest if group_of_unit[_unit_of(r)] == group],
                          source=manifest.source))
            for group in groups]


def manifest_column(column: str) -> Callable[[Record], str]:
    """A record's value in a text column of the manifest, e.g. to group folds by.

    Raises:
        RadpathError: if ``column`` is not such a column (``lesions`` holds a list).
    """
    if column not in record_fields() or column == "lesions":
        raise RadpathError(f"{column!r} is not a manifest column")
    return lambda record: str(getattr(record, column))


def lodo_folds(manifest: Manifest, column: str = "domain") -> list[Fold]:
    """Leave-one-domain-out folds: one per distinct non-empty value of ``column``.

    A patient whose images span several values must not sit on both sides of a fold. Such a
    patient goes entirely to the test side of every fold whose held-out value it touches,
    so a test side may hold a few of that patient's images from other values; the train
    side never holds an image of the held-out value. Records with an empty value train in
    every fold, unless their patient is held out.

    Args:
        manifest: the records to fold.
        column: the manifest column naming the domain (e.g. ``domain`` or ``source``).

    Returns:
        Folds sorted by held-out value.

    Raises:
        RadpathError: if ``column`` is not a manifest column or has fewer than 2 distinct
            non-empty values.
    """
    value_of = manifest_column(column)
    values = sorted({value_of(r) for r in manifest} - {""})
    if len(values) < 2:
        raise RadpathError(f"leave-one-domain-out needs at least 2 distinct values in column "
                           f"'{column}'; found {len(values)} ({', '.join(values) or 'none'})")
    return [_fold(manifest, column, value) for value in values]


def _fold(manifest: Manifest, column: str, value: str) -> Fold:
    held_out = {r.patient_id for r in manifest if getattr(r, column) == value}
    train = [r for r in manifest if r.patient_id not in held_out]
    test = [r for r in manifest if r.patient_id in held_out]
    return Fold(value, Manifest(train, source=manifest.source),
                Manifest(test, source=manifest.source))


def check_leakage(splits: Mapping[str, Manifest] | Manifest) -> None:
    """Raise if any patient has images in more than one split.

    Args:
        splits: named manifests (e.g. ``{"train": ..., "test": ...}``), or one manifest whose
            ``split`` column names each record's split (an empty value counts as the split
            ``(none)``, so a half-assigned patient is caught too).

    Raises:
        LeakageError: naming up to 10 leaking patients and the splits each appears in.
    """
    if isinstance(splits, Manifest):
        named: dict[str, list[Record]] = defaultdict(list)
        for record in splits:
            named[record.split or "(none)"].append(record)
        splits = {name: Manifest(records) for name, records in named.items()}
    seen: dict[str, list[str]] = defaultdict(list)
    for name, manifest in splits.items():
        for patient_id in group_by_patient(manifest):
            seen[patient_id].append(name)
    leaks = {p: names for p, names in sorted(seen.items()) if len(names) > 1}
    if leaks:
        raise LeakageError(leaks)
