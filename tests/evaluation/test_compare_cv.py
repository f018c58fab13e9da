"""benchmarks/compare_cv.py: one run's predictions, or several averaged into an ensemble."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from radpath.evaluation.predict import PREDICTION_COLUMNS, PREDICTION_FIELDS
from tests.conftest import load_benchmark


def _compare_cv():
    return load_benchmark("compare_cv")


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["unit_id", "fold", "label",
                                         *PREDICTION_COLUMNS.values()])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(unit: str, label: int, mammo: str, histo: str, fused: str) -> dict[str, str]:
    return {"unit_id": unit, "fold": "fold-1", "label": str(label),
            PREDICTION_COLUMNS["mammo"]: mammo, PREDICTION_COLUMNS["histo"]: histo,
            PREDICTION_COLUMNS["fused"]: fused}


def test_one_file_is_read_as_it_is(tmp_path):
    path = _write(tmp_path / "a.csv", [_row("u1", 1, "0.2", "", "0.3")])
    assert _compare_cv().read_ensemble(str(path))["u1"][PREDICTION_COLUMNS["mammo"]] == "0.2"


def test_an_ensemble_scores_the_mean_logit_of_the_units_every_run_scored(tmp_path, capsys):
    first = _write(tmp_path / "a.csv", [_row("u1", 1, "0.5", "", "0.9"),
                                        _row("u2", 0, "0.1", "0.2", "0.3")])
    second = _write(tmp_path / "b.csv", [_row("u1", 1, "0.8", "", "0.5")])
    ensemble = _compare_cv().read_ensemble(f"{first},{second}")

    assert set(ensemble) == {"u1"}
    assert "1 units not in every run" in capsys.readouterr().out
    mean_logit = (math.log(0.8 / 0.2) + 0.0) / 2  # logit(0.5) is 0
    assert float(ensemble["u1"][PREDICTION_COLUMNS["mammo"]]) == pytest.approx(
        1 / (1 + math.exp(-mean_logit)))
    assert float(ensemble["u1"][PREDICTION_COLUMNS["fused"]]) == pytest.approx(
        1 / (1 + math.exp(-(math.log(9) + 0.0) / 2)))
    assert ensemble["u1"][PREDICTION_COLUMNS["histo"]] == ""  # no run scored H&E


def test_runs_that_disagree_on_a_label_are_refused(tmp_path):
    first = _write(tmp_path / "a.csv", [_row("u1", 1, "0.5", "", "0.5")])
    second = _write(tmp_path / "b.csv", [_row("u1", 0, "0.5", "", "0.5")])
    with pytest.raises(SystemExit, match="disagree on the labels of"):
        _compare_cv().read_ensemble(f"{first},{second}")


def test_cv_tables_add_the_seeds_ensemble(tmp_path):
    # Each seed alone ranks one malignant unit (label 2) below a benign one; their mean
    # logits rank every malignant unit first: AUC 0.75, 0.75, then 1.0.
    for seed, (m1, m2) in enumerate([("0.9", "0.3"), ("0.3", "0.9")]):
        folder = tmp_path / f"seed-{seed}" / "erm"
        folder.mkdir(parents=True)
        _write(folder / "predictions.csv", [
            _row("u1", 2, m1, "0.6", "0.7"), _row("u2", 2, m2, "", "0.7"),
            _row("u3", 1, "0.4", "0.5", "0.2"), _row("u4", 0, "0.2", "", "0.1")])
    for_one = _compare_cv().auc_of(
        _compare_cv().read_predictions(tmp_path / "seed-0" / "erm" / "predictions.csv"),
        PREDICTION_COLUMNS["mammo"], ["u1", "u2", "u3", "u4"])
    assert for_one.value == pytest.approx(0.75)

    lines = load_benchmark("real_cpu_cv")._seed_ensemble(tmp_path, [0, 1], ["erm"])
    assert any(line.startswith("| erm | mammo | 1.000 [") and "(n=4)" in line for line in lines)
    assert any(line.startswith("| erm | fused | 1.000 [") for line in lines)
    assert any(line.startswith("| erm | fused, both modalities | 1.000 [") and "(n=2)" in line
               for line in lines)
    assert any(line.startswith("| erm | histo | 1.000 [") and "(n=2)" in line for line in lines)
    assert load_benchmark("real_cpu_cv")._seed_ensemble(tmp_path, [0], ["erm"]) == []


def _write_with_patients(path: Path, rows: list[tuple[str, int, str, str, str]]) -> Path:
    """(unit, label, histo probability, mammography patients, H&E patients) rows."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_FIELDS)
        for unit, label, histo, mammo_patients, histo_patients in rows:
            writer.writerow([unit, "fold-1", label, "", histo, "", mammo_patients,
                             histo_patients])
    return path


def test_key_pairs_a_joint_runs_pseudo_pairs_with_units_of_one_modality(tmp_path, capsys):
    joint = _write_with_patients(tmp_path / "joint.csv", [
        ("pseudo-0001", 2, "0.9", "m1", "h1"), ("pseudo-0002", 0, "0.2", "m2", "h2"),
        ("m3", 2, "", "m3", ""), ("pseudo-0003", 2, "0.4", "m4", "h3")])
    alone = _write_with_patients(tmp_path / "alone.csv", [
        ("h3", 2, "0.8", "", "h3"), ("h1", 2, "0.7", "", "h1"), ("h2", 0, "0.6", "", "h2")])
    compare_cv = _compare_cv()
    rows = compare_cv.read_predictions(joint, "histo_patients")
    assert list(rows) == ["h1", "h2", "h3"]  # the unit without H&E has no H&E patient
    assert rows["h1"]["unit_id"] == "pseudo-0001"
    keyed = compare_cv.read_ensemble(str(alone), "histo_patients")
    line = compare_cv.compare(rows, keyed, PREDICTION_COLUMNS["histo"], list(rows))
    # Both rank both malignant units above the benign one: AUC 1 each, no difference.
    assert line.startswith("1.000") and "+0.000" in line and "(n=3)" in line
    assert compare_cv.compare(rows, keyed, PREDICTION_COLUMNS["mammo"], list(rows)) == (
        "no labelled unit scored by both")


def test_a_key_naming_two_units_is_refused(tmp_path):
    path = _write_with_patients(tmp_path / "twice.csv", [
        ("pseudo-0001", 2, "0.9", "m1", "h1"), ("pseudo-0002", 0, "0.2", "m2", "h1")])
    with pytest.raises(SystemExit, match="'h1' is in units pseudo-0001 and pseudo-0002"):
        _compare_cv().read_predictions(path, "histo_patients")


def test_files_without_patient_columns_name_what_is_missing(tmp_path):
    path = _write(tmp_path / "old.csv", [_row("u1", 1, "0.2", "", "0.3")])
    with pytest.raises(SystemExit, match="histo_patients"):
        _compare_cv().read_predictions(path, "histo_patients")
