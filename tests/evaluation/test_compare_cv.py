"""benchmarks/compare_cv.py: one run's predictions, or several averaged into an ensemble."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

from radpath.evaluation.crossval import PREDICTION_COLUMNS
from tests.conftest import REPO_ROOT


def _compare_cv():
    spec = importlib.util.spec_from_file_location(
        "compare_cv", REPO_ROOT / "benchmarks" / "compare_cv.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
