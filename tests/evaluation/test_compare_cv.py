"""benchmarks/compare_cv.py: one run's predictions, or several averaged into an ensemble."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from radpath.evaluation.predict import PREDICTION_COLUMNS
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
