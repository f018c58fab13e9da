"""Tests of patient-grouped stratified splits, LODO folds and the leakage check."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from radpath.data.manifest import LABELS, Manifest, Record
from radpath.data.pairing import pair_modalities
from radpath.data.splits import (
    LeakageError,
    check_leakage,
    group_folds,
    lodo_folds,
    patient_folds,
    split_patients,
)
from radpath.errors import RadpathError


def _cohort(n_patients: int = 30, images: int = 3) -> Manifest:
    records = []
    for p in range(n_patients):
        modality = "mammo" if p % 2 else "histo"
        for i in range(images):
            records.append(Record(f"p{p:03d}-{i}", f"p{p:03d}", modality, f"/x/{p}-{i}.png",
                                  LABELS[p % 3], domain=f"site-{p % 3}"))
    return Manifest(records)


def _patient_splits(manifest: Manifest) -> dict[str, set[str]]:
    splits: dict[str, set[str]] = defaultdict(set)
    for record in manifest:
        splits[record.patient_id].add(record.split)
    return splits


def test_every_patient_in_exactly_one_split() -> None:
    split = split_patients(_cohort())
    assert all(len(s) == 1 for s in _patient_splits(split).values())
    assert {r.split for r in split} == {"train", "val", "test"}
    check_leakage(split)


def test_split_sizes_follow_fractions() -> None:
    split = split_patients(_cohort(60, 1))
    sizes = Counter(r.split for r in split)
    assert sizes["train"] == pytest.approx(42, abs=3)
    assert sizes["val"] == pytest.approx(9, abs=3)
    assert sizes["test"] == pytest.approx(9, abs=3)


def test_stratified_every_label_in_every_split() -> None:
    split = split_patients(_cohort(18, 1))  # 3 patients per (modality, label)
    for name in ("train", "val", "test"):
        for modality in ("mammo", "histo"):
            labels = {r.label for r in split.filter(split=name, modality=modality)}
            assert labels == set(LABELS), (name, modality)


def test_small_strata_split_in_proportion_without_the_one_per_stratum_rule() -> None:
    cohort = _cohort(24, 1)  # 6 strata of 4 units: the rule gives each stratum a val unit
    fractions, names = (0.9, 0.1), ("train", "val")
    ruled = Counter(r.split for r in split_patients(cohort, fractions=fractions, names=names))
    assert ruled["val"] == 6
    plain = split_patients(cohort, fractions=fractions, names=names, one_per_stratum=False)
    assert Counter(r.split for r in plain) == {"train": 22, "val": 2}  # 2.4, rounded down
    check_leakage(plain)


def test_split_is_seeded_and_independent_of_row_order() -> None:
    manifest = _cohort()
    first = split_patients(manifest, seed=1)
    assert [r.split for r in first] == [r.split for r in split_patients(manifest, seed=1)]
    shuffled = split_patients(Manifest(list(reversed(manifest.records))), seed=1)
    assert {r.image_id: r.split for r in shuffled} == {r.image_id: r.split for r in first}
    assert any([r.split for r in split_patients(manifest, seed=s)] != [r.split for r in first]
               for s in range(2, 6))


def test_pseudo_pairs_stay_together() -> None:
    paired = pair_modalities(_cohort(40, 1), seed=0)
    split = split_patients(paired, seed=4)
    by_pair: dict[str, set[str]] = defaultdict(set)
    for record in split:
        if record.pairing == "pseudo":
            by_pair[record.pair_id].add(record.split)
    assert by_pair and all(len(s) == 1 for s in by_pair.values())


def test_bad_fractions_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        split_patients(_cohort(), fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match=">= 0"):
        split_patients(_cohort(), fractions=(1.2, -0.1, -0.1))


def test_check_leakage_names_the_patient_and_splits() -> None:
    manifest = split_patients(_cohort())
    leaked = manifest.records[0].with_(split="test" if manifest[0].split != "test" else "train")
    crafted = Manifest([leaked, *manifest.records[1:]])
    with pytest.raises(LeakageError, match="p000") as info:
        check_leakage(crafted)
    assert set(info.value.patients["p000"]) == {leaked.split, manifest[1].split}
    train = Manifest([r for r in manifest if r.split == "train"])
    test = Manifest([manifest.filter(split="train")[0].with_(image_id="copy")])
    with pytest.raises(LeakageError, match=r"in train, test|in test, train"):
        check_leakage({"train": train, "test": test})


def test_lodo_one_fold_per_domain_without_leakage() -> None:
    manifest = _cohort()
    # One patient with images in two domains: it must sit wholly on the test side.
    straddler = manifest.records[0].with_(image_id="p000-extra", domain="site-1")
    manifest = Manifest([*manifest.records, straddler])
    folds = lodo_folds(manifest)
    assert [f.name for f in folds] == ["site-0", "site-1", "site-2"]
    for fold in folds:
        assert fold.name not in {r.domain for r in fold.train}
        assert len(fold.train) + len(fold.test) == len(manifest)
        check_leakage({"train": fold.train, "test": fold.test})
    assert "p000" in folds[1].test.patients()


def test_lodo_needs_two_values() -> None:
    single = Manifest(r.with_(domain="only") for r in _cohort(6, 1))
    with pytest.raises(RadpathError, match="'domain'"):
        lodo_folds(single)
    with pytest.raises(RadpathError, match="'source'"):
        lodo_folds(single, column="source")


def test_malignant_cases_of_each_domain_are_shared_between_splits() -> None:
    # Two densities, each with 8 malignant and 16 other patients: a split by label alone
    # is free to put one density's malignant cases mostly in training.
    records = [Record(f"p{p:03d}", f"p{p:03d}", "mammo", f"/x/{p}.png",
                      "malignant" if p % 3 == 0 else "normal",
                      domain="dense" if p % 2 else "fatty") for p in range(48)]
    for seed in range(5):
        split = split_patients(Manifest(records), fractions=(0.5, 0.5, 0.0), seed=seed)
        counts = Counter((r.domain, r.label, r.split) for r in split)
        for domain in ("dense", "fatty"):
            assert counts[(domain, "malignant", "train")] == 4
            assert counts[(domain, "malignant", "val")] == 4


def _unit_folds(folds) -> dict[str, set[str]]:
    tested: dict[str, set[str]] = defaultdict(set)
    for fold in folds:
        for record in fold.test:
            tested[record.patient_id].add(fold.name)
    return tested


def test_group_folds_hold_out_each_group_once_and_test_every_patient_once() -> None:
    manifest = _cohort(30, 2)
    folds = group_folds(manifest, lambda record: record.domain)
    assert [f.name for f in folds] == ["site-0", "site-1", "site-2"]
    for fold in folds:
        assert {r.domain for r in fold.test} == {fold.name}
        assert fold.name not in {r.domain for r in fold.train}
        assert len(fold.train) + len(fold.test) == len(manifest)
    tested = _unit_folds(folds)
    assert set(tested) == {r.patient_id for r in manifest}
    assert all(len(names) == 1 for names in tested.values())


def test_group_folds_refuse_a_patient_in_two_groups_and_a_single_group() -> None:
    manifest = _cohort(6, 2)
    straddler = manifest.records[0].with_(image_id="p000-extra", domain="site-1")
    with pytest.raises(RadpathError, match="p000 has records in groups site-0, site-1"):
        group_folds(Manifest([*manifest.records, straddler]), lambda record: record.domain)
    with pytest.raises(RadpathError, match="at least 2 groups"):
        group_folds(manifest, lambda record: "one")
    with pytest.raises(RadpathError, match="p000 has a record without a group"):
        group_folds(manifest, lambda record: "" if record.patient_id == "p000" else "a")


def test_cross_validation_tests_every_patient_exactly_once() -> None:
    manifest = _cohort(31, 2)
    folds = patient_folds(manifest, 4, seed=3)
    assert [f.name for f in folds] == ["fold-1", "fold-2", "fold-3", "fold-4"]
    tested = _unit_folds(folds)
    assert set(tested) == {r.patient_id for r in manifest}
    assert all(len(names) == 1 for names in tested.values())
    for fold in folds:
        assert len(fold.train) + len(fold.test) == len(manifest)
        assert not {r.patient_id for r in fold.train} & {r.patient_id for r in fold.test}
    sizes = Counter(next(iter(names)) for names in tested.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1  # 31 patients: 8, 8, 8, 7


def test_cross_validation_spreads_each_stratum_over_the_folds() -> None:
    folds = patient_folds(_cohort(60, 1), 3, seed=0)  # 10 patients per (modality, label)
    for fold in folds:
        counts = Counter((r.modality, r.label) for r in fold.test)
        assert len(counts) == 6 and all(c in (3, 4) for c in counts.values()), counts


def test_cross_validation_keeps_pseudo_pairs_and_is_seeded() -> None:
    paired = pair_modalities(_cohort(40, 1), seed=0)
    folds = patient_folds(paired, 3, seed=2)
    pair_folds: dict[str, set[str]] = defaultdict(set)
    for fold in folds:
        for record in fold.test:
            if record.pairing == "pseudo":
                pair_folds[record.pair_id].add(fold.name)
    assert pair_folds and all(len(s) == 1 for s in pair_folds.values())
    again = patient_folds(paired, 3, seed=2)
    assert [[r.image_id for r in f.test] for f in again] == [
        [r.image_id for r in f.test] for f in folds]
    assert any(_unit_folds(patient_folds(paired, 3, seed=s)) != _unit_folds(folds)
               for s in range(3, 7))


@pytest.mark.parametrize("k", [1, 41])
def test_cross_validation_fold_count_is_checked(k: int) -> None:
    with pytest.raises(ValueError, match="folds"):
        patient_folds(_cohort(40, 1), k)


def _pseudo_paired_cohort() -> Manifest:
    """48 mammography patients of one density and 48 H&E images of two staining batches,
    each batch half benign, half malignant: the batch rides along in the pseudo-pairs."""
    records = []
    for p in range(48):
        label = "malignant" if p % 2 else "benign"
        records.append(Record(f"m{p:03d}", f"m{p:03d}", "mammo", f"/x/m{p}.png", label,
                              domain="fatty"))
        records.append(Record(f"h{p:03d}", f"h{p:03d}", "histo", f"/x/h{p}.png", label,
                              domain="batch-a" if p < 12 else "batch-b"))
    return pair_modalities(Manifest(records), seed=0)


def test_staining_batches_of_pseudo_pairs_are_spread_over_splits_and_folds() -> None:
    paired = _pseudo_paired_cohort()
    for seed in range(4):
        split = split_patients(paired, fractions=(0.5, 0.5, 0.0), seed=seed)
        counts = Counter((r.domain, r.label, r.split) for r in split if r.modality == "histo")
        for label in ("benign", "malignant"):
            assert counts[("batch-a", label, "train")] == counts[("batch-a", label, "val")] == 3
        folds = patient_folds(paired, 3, seed=seed)
        for fold in folds:
            held = Counter((r.domain, r.label) for r in fold.test if r.modality == "histo")
            assert all(held[("batch-a", label)] == 2 for label in ("benign", "malignant"))
