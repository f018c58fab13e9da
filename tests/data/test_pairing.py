"""Tests of cross-modal pairing: true pairs, seeded label-matched pseudo-pairs, leftovers."""

from __future__ import annotations

from collections import defaultdict

from radpath.data.manifest import Manifest, Record
from radpath.data.pairing import pair_modalities, pairing_mode, pairing_summary, patient_label


def _record(patient: str, modality: str, label: str, n: int = 0) -> Record:
    return Record(f"{patient}-{modality}-{n}", patient, modality, f"/x/{patient}-{n}.png", label)


def _cohort() -> Manifest:
    records = [
        _record("both-1", "mammo", "benign"), _record("both-1", "histo", "malignant"),
        _record("both-2", "mammo", "normal"), _record("both-2", "histo", "normal", 1),
    ]
    for i in range(4):
        records.append(_record(f"m-mal-{i}", "mammo", "malignant"))
        records.append(_record(f"h-mal-{i}", "histo", "malignant"))
        records.append(_record(f"h-mal-{i}", "histo", "malignant", 1))
    records += [_record("m-ben-0", "mammo", "benign"), _record("m-ben-1", "mammo", "benign"),
                _record("h-ben-0", "histo", "benign"), _record("h-unk-0", "histo", ""),
                _record("m-unk-0", "mammo", "")]
    return Manifest(records)


def _pairs(manifest: Manifest) -> dict[str, set[str]]:
    pairs: dict[str, set[str]] = defaultdict(set)
    for record in manifest:
        if record.pairing == "pseudo":
            pairs[record.pair_id].add(record.patient_id)
    return dict(pairs)


def test_patient_label_is_the_worst_image() -> None:
    assert patient_label([_record("p", "mammo", "normal"),
                          _record("p", "mammo", "malignant", 1)]) == "malignant"
    unknown_then_normal = [_record("p", "mammo", ""), _record("p", "mammo", "normal", 1)]
    assert patient_label(unknown_then_normal) == "normal"
    assert patient_label([_record("p", "mammo", "")]) == ""


def test_true_pairs_are_patients_with_both_modalities() -> None:
    paired = pair_modalities(_cohort())
    for record in paired.filter(patient_id="both-1"):
        assert (record.pairing, record.pair_id) == ("true", "both-1")


def test_pseudo_pairs_are_one_to_one_and_label_matched() -> None:
    manifest = _cohort()
    paired = pair_modalities(manifest, seed=3)
    assert [r.image_id for r in paired] == [r.image_id for r in manifest]
    labels = {r.patient_id: r.label for r in paired if r.label}
    modality = {r.patient_id: r.modality for r in paired}
    pairs = _pairs(paired)
    assert len(pairs) == 5  # 4 malignant + 1 benign
    for members in pairs.values():
        assert len(members) == 2
        assert {modality[p] for p in members} == {"mammo", "histo"}
        assert len({labels[p] for p in members}) == 1
    # Every image of a patient carries the same pair id.
    for patient in ("h-mal-0", "h-mal-1"):
        assert len({r.pair_id for r in paired.filter(patient_id=patient)}) == 1


def test_leftovers_are_unpaired() -> None:
    paired = pair_modalities(_cohort())
    unpaired = {r.patient_id for r in paired if r.pairing == "unpaired"}
    # One benign mammo patient has no partner; unknown labels are never paired.
    assert "h-unk-0" in unpaired and "m-unk-0" in unpaired
    assert len(unpaired & {"m-ben-0", "m-ben-1"}) == 1
    assert all(r.pair_id == "" for r in paired if r.pairing == "unpaired")


def test_pairs_are_seeded_and_independent_of_row_order() -> None:
    manifest = _cohort()
    same = [_pairs(pair_modalities(manifest, seed=s)) for s in (7, 7)]
    assert same[0] == same[1]
    reversed_rows = Manifest(list(reversed(manifest.records)))
    assert _pairs(pair_modalities(reversed_rows, seed=7)) == same[0]
    variants = {frozenset(frozenset(m) for m in _pairs(pair_modalities(manifest, seed=s)).values())
                for s in range(10)}
    assert len(variants) > 1


def test_summary_and_mode() -> None:
    manifest = _cohort()
    assert pairing_mode(manifest) == "none"
    assert pairing_summary(manifest)["unset"] == len(manifest.patients())
    paired = pair_modalities(manifest)
    summary = pairing_summary(paired)
    assert summary == {"true": 2, "pseudo": 10, "unpaired": 3, "unset": 0, "pseudo_pairs": 5}
    assert pairing_mode(paired) == "mixed"
    assert pairing_mode(paired.filter(pairing="true")) == "true"
    assert pairing_mode(paired.filter(pairing="pseudo")) == "pseudo"
