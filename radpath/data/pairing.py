"""Cross-modal pairing: which mammography patient goes with which histopathology patient.

Public datasets rarely image one patient in both modalities. A patient who has both is a
*true* pair. The others are matched into label-matched *pseudo-pairs*: one mammo-only and
one histo-only patient with the same patient label, drawn 1-to-1 at random (seeded). A
pseudo-pair shares a label, never anatomy, so every result built on pseudo-pairs must say
so: :func:`pairing_mode` gives the word to write into the run record.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np

from radpath.data.manifest import LABELS, MODALITIES, Manifest, Record

# Worst-first ordering of labels; unknown ("") ranks below everything.
LABEL_RANK = {"": 0, "normal": 1, "benign": 2, "malignant": 3}


def patient_label(records: Iterable[Record]) -> str:
    """A patient's label: the worst label among its images.

    Args:
        records: the images of one patient.

    Returns:
        ``"malignant"`` > ``"benign"`` > ``"normal"`` > ``""`` (unknown).
    """
    worst = ""
    for record in records:
        if LABEL_RANK.get(record.label, 0) > LABEL_RANK[worst]:
            worst = record.label
    return worst


def group_by_patient(records: Iterable[Record]) -> dict[str, list[Record]]:
    """Records grouped by ``patient_id``, patients in order of first appearance."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record.patient_id].append(record)
    return dict(groups)


def pair_modalities(manifest: Manifest, *, seed: int = 0) -> Manifest:
    """Set ``pairing`` and ``pair_id`` on every record.

    Patients with both modalities become true pairs (``pair_id`` = their patient id).
    Mammo-only and histo-only patients are shuffled within each patient label and zipped
    into pseudo-pairs ``pseudo-0000``, ``pseudo-0001``, ... Patients left without a partner
    of the same label, or whose label is unknown, are ``unpaired``. Patients are sorted by
    id before shuffling, so the pairs depend on the seed and the patients, not on row order.

    Args:
        manifest: the records to pair; any existing pairing columns are overwritten.
        seed: seed of the :class:`numpy.random.Generator` drawing the pseudo-pairs.

    Returns:
        A new manifest with the same records in the same order.
    """
    patients = group_by_patient(manifest)
    assignment: dict[str, tuple[str, str]] = {}
    singles: dict[tuple[str, str], list[str]] = defaultdict(list)
    for patient_id, records in patients.items():
        modalities = {r.modality for r in records}
        if modalities >= set(MODALITIES):
            assignment[patient_id] = ("true", patient_id)
        else:
            singles[(records[0].modality, patient_label(records))].append(patient_id)
    assignment.update(_pseudo_pairs(singles, seed))
    for ids in singles.values():
        for patient_id in ids:
            assignment.setdefault(patient_id, ("unpaired", ""))
    paired = (r.with_(pairing=assignment[r.patient_id][0], pair_id=assignment[r.patient_id][1])
              for r in manifest)
    return Manifest(paired, source=manifest.source)


def _pseudo_pairs(singles: dict[tuple[str, str], list[str]],
                  seed: int) -> dict[str, tuple[str, str]]:
    """Match mammo-only to histo-only patients 1-to-1 within each known label."""
    rng = np.random.default_rng(seed)
    assignment: dict[str, tuple[str, str]] = {}
    number = 0
    # A fixed label order keeps the generator's draws, hence the pairs, reproducible.
    for label in LABELS:
        mammo = _shuffled(sorted(singles.get(("mammo", label), [])), rng)
        histo = _shuffled(sorted(singles.get(("histo", label), [])), rng)
        for mammo_id, histo_id in zip(mammo, histo, strict=False):
            pair_id = f"pseudo-{number:04d}"
            assignment[mammo_id] = assignment[histo_id] = ("pseudo", pair_id)
            number += 1
    return assignment


def _shuffled(items: list[str], rng: np.random.Generator) -> list[str]:
    return [items[i] for i in rng.permutation(len(items))]


def pairing_summary(manifest: Manifest) -> dict[str, int]:
    """How many patients are in true pairs, pseudo-pairs, unpaired, or not yet paired.

    Returns:
        Counts of patients under the keys ``true``, ``pseudo``, ``unpaired`` and ``unset``
        (pairing column empty), plus ``pseudo_pairs``: the number of distinct pseudo-pairs.
    """
    counts: Counter[str] = Counter({"true": 0, "pseudo": 0, "unpaired": 0, "unset": 0})
    pseudo_ids: set[str] = set()
    for records in group_by_patient(manifest).values():
        first = records[0]
        counts[first.pairing or "unset"] += 1
        if first.pairing == "pseudo":
            pseudo_ids.add(first.pair_id)
    return {**counts, "pseudo_pairs": len(pseudo_ids)}


def pairing_mode(manifest: Manifest) -> str:
    """The pairing a run used, for its record: ``true``, ``pseudo``, ``mixed`` or ``none``.

    Unpaired patients do not change the mode; ``none`` means no record is paired at all.
    """
    used = {r.pairing for r in manifest} & {"true", "pseudo"}
    if len(used) == 2:
        return "mixed"
    return used.pop() if used else "none"
