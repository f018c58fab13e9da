"""Cross-validation with pooled out-of-fold predictions, run for real on a tiny model."""

import csv
import json
import zlib

import pytest
from scipy.special import expit, logit

from radpath.data.manifest import Manifest, read_manifest
from radpath.errors import ConfigError, RadpathError
from radpath.evaluation.crossval import cv_manifests, run_cv
from radpath.evaluation.evaluate import BOTH_MODALITIES
from radpath.evaluation.predict import PREDICTION_COLUMNS


def test_every_unit_is_held_out_once_and_never_trained_on(tiny_manifest) -> None:
    manifest = read_manifest(tiny_manifest)
    folds = cv_manifests(manifest, 3, seed=1)
    held_out: dict[str, list[str]] = {}
    for name, fold in folds:
        assert {r.split for r in fold} == {"train", "val", "test"}
        assert len(fold) == len(manifest)
        trained = {r.patient_id for r in fold if r.split != "test"}
        for record in fold:
            if record.split == "test":
                assert record.patient_id not in trained
                held_out.setdefault(record.image_id, []).append(name)
    assert set(held_out) == {r.image_id for r in manifest}
    assert all(len(names) == 1 for names in held_out.values())


def test_inner_validation_share_follows_val_fraction(tiny_manifest) -> None:
    # The tiny cohort's strata hold one or two units each: one unit of every stratum in the
    # inner validation split would hold out about half of each fold's training units.
    manifest = read_manifest(tiny_manifest)
    for val_fraction in (0.15, 0.4):
        for _, fold in cv_manifests(manifest, 3, seed=0, val_fraction=val_fraction):
            units = {s: {r.pair_id or r.patient_id for r in fold if r.split == s}
                     for s in ("train", "val")}
            n = len(units["train"]) + len(units["val"])
            assert abs(len(units["val"]) - val_fraction * n) <= 1, (val_fraction, units)


def test_a_val_fraction_too_small_for_one_unit_still_gives_one(tiny_manifest) -> None:
    # A fold trains on a few dozen units at most: 1% of them rounds to none, and a fold
    # without an inner validation unit cannot select or early-stop its checkpoints.
    manifest = read_manifest(tiny_manifest)
    for _, fold in cv_manifests(manifest, 3, seed=0, val_fraction=0.01):
        units = {s: {r.pair_id or r.patient_id for r in fold if r.split == s}
                 for s in ("train", "val")}
        assert len(units["val"]) == 1, units
        assert len(units["train"]) >= 1


def test_grouped_folds_hold_out_each_group_once(tiny_manifest) -> None:
    manifest = read_manifest(tiny_manifest)

    def half(record) -> str:  # constant within a unit: a pair shares its pair_id
        return str(zlib.crc32((record.pair_id or record.patient_id).encode()) % 2)

    folds = cv_manifests(manifest, 3, group_of=half)
    assert [name for name, _ in folds] == ["0", "1"]
    tested = []
    for name, fold in folds:
        assert {half(r) for r in fold if r.split == "test"} == {name}
        assert {half(r) for r in fold if r.split != "test"} == {str(1 - int(name))}
        tested += [r.image_id for r in fold if r.split == "test"]
    assert sorted(tested) == sorted(r.image_id for r in manifest)


def test_grouped_folds_refuse_a_pseudo_pair_across_groups(tiny_manifest) -> None:
    # The tiny cohort pseudo-pairs some H&E of site-a with mammograms of another site.
    with pytest.raises(RadpathError, match="has records in groups"):
        cv_manifests(read_manifest(tiny_manifest), 3, group_of=lambda record: record.domain)


def test_cv_pools_out_of_fold_predictions(tiny_manifest, tiny_config, tmp_path) -> None:
    # Without the H&E of two true pairs (a normal and a malignant patient) the cohort
    # mixes units with both modalities and mammography-only units, as real cohorts do.
    full = read_manifest(tiny_manifest)
    manifest = Manifest([r for r in full if not (r.modality == "histo" and r.patient_id
                                                 in ("syn-p009", "syn-p011"))],
                        source=full.source)
    rows = run_cv(tiny_config("optim.epochs=1"), manifest, tmp_path / "cv", k=2,
                  algorithms=("erm", "paper"), workers=1, n_boot=50)
    with (tmp_path / "cv" / "erm" / "predictions.csv").open() as handle:
        predicted = list(csv.DictReader(handle))
    units = {r.pair_id or r.patient_id for r in manifest}
    assert len(predicted) == len({row["unit_id"] for row in predicted}) == len(units)
    assert {row["fold"] for row in predicted} == {"fold-1", "fold-2"}
    for modality in ("mammo", "histo"):  # each unit's patients, as compare_cv --key reads
        patients = {row["unit_id"]: ";".join(sorted(
            {r.patient_id for r in manifest if r.modality == modality
             and (r.pair_id or r.patient_id) == row["unit_id"]})) for row in predicted}
        assert {row["unit_id"]: row[f"{modality}_patients"] for row in predicted} == patients
    assert any(row["histo_patients"] for row in predicted)
    assert any(not row["histo_patients"] for row in predicted)
    pooled = {(r["algorithm"], r["modality"]): r for r in rows if r["scope"] == "pooled"
              and r["task"] == "malignancy" and r["domain"] == "all" and r["metric"] == "auc"}
    assert pooled[("erm", "fused")]["n"] == len(units)
    per_fold = [r for r in rows if r["scope"].startswith("fold-") and r["algorithm"] == "erm"
                and r["modality"] == "fused" and r["domain"] == "all"]
    assert sum(r["n"] for r in per_fold) == len(units)
    assert any(r["metric"] == "delong_p_vs_erm" and r["algorithm"] == "paper" for r in rows)
    table = (tmp_path / "cv" / "cv.md").read_text()
    assert "2-fold cross-validation" in table and "| paper | fused |" in table
    # The tiny cohort mixes pairs with single-modality units: the fused head is also
    # scored on the pairs alone, pooled and per fold, and tested against each modality.
    both = sum(1 for row in predicted if row["mammo_prob"] and row["histo_prob"])
    assert both == len(units) - 2
    on_both = [r for r in rows if r["algorithm"] == "erm" and r["task"] == "malignancy"
               and r["modality"] == "fused"
               and r["domain"] == BOTH_MODALITIES and r["metric"] == "auc"]
    assert [r["n"] for r in on_both if r["scope"] == "pooled"] == [both]
    assert sum(r["n"] for r in on_both if r["scope"] != "pooled") == both
    assert {r["metric"] for r in rows if r["domain"] == BOTH_MODALITIES
            and r["algorithm"] == "paper"} >= {"delong_p_fused_vs_mammo",
                                               "delong_p_fused_vs_histo", "delong_p_vs_erm"}
    assert f"| erm | fused, {BOTH_MODALITIES} |" in table
    assert f"Fusion (paper) on the {both} units with both modalities" in table
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())
    assert "<img" in (tmp_path / "cv" / "paper" / "report.html").read_text()


def test_unknown_checkpoint_is_refused_before_any_training(tiny_manifest, tiny_config,
                                                           tmp_path) -> None:
    with pytest.raises(ConfigError, match="one of best, last, snapshots"):
        run_cv(tiny_config(), read_manifest(tiny_manifest), tmp_path / "cv", k=2,
               checkpoint="middle")
    with pytest.raises(ConfigError, match=r"'snapshots' needs optim\.cycles of 2 or more"):
        run_cv(tiny_config(), read_manifest(tiny_manifest), tmp_path / "cv", k=2,
               checkpoint="snapshots")
    assert not (tmp_path / "cv").exists()


def test_cv_scores_each_fold_by_its_snapshots(tiny_manifest, tiny_config, tmp_path) -> None:
    manifest = read_manifest(tiny_manifest)
    run_cv(tiny_config("optim.epochs=2", "optim.cycles=2"), manifest, tmp_path / "cv", k=2,
           workers=1, n_boot=20, checkpoint="snapshots")
    for fold in ("fold-1", "fold-2"):
        kept = sorted(p.name for p in (tmp_path / "cv" / fold / "erm" / "checkpoints")
                      .glob("snapshot-*"))
        assert kept == ["snapshot-000.ckpt", "snapshot-001.ckpt"]
    read = {name: _probabilities(tmp_path / "cv" / "erm" / name) for name in
            ("predictions.csv", "members/snapshot-000.csv", "members/snapshot-001.csv")}
    joint, first, second = read.values()
    units = {unit for unit, _ in joint}
    assert units == {r.pair_id or r.patient_id for r in manifest}
    assert first.keys() == second.keys() == joint.keys()
    for key, prob in joint.items():
        assert prob == pytest.approx(expit((logit(first[key]) + logit(second[key])) / 2),
                                     abs=1e-5)
    assert first != second
    assert "mean logit of the snapshots" in (tmp_path / "cv" / "cv.md").read_text()


def _probabilities(path) -> dict[tuple[str, str], float]:
    """``{(unit, output column): probability}`` of a CV predictions file."""
    with path.open() as handle:
        return {(row["unit_id"], column): float(row[column]) for row in csv.DictReader(handle)
                for column in PREDICTION_COLUMNS.values() if row[column]}
