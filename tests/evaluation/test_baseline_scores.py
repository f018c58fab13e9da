"""benchmarks/real_baselines.py --scores: per-unit baseline scores that compare_cv reads."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from radpath.evaluation.predict import PREDICTION_COLUMNS
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def baselines():
    return load_benchmark("real_baselines")


def _unit(unit_id: str, label: str):
    """An H&E-only unit of patient ``unit_id`` with two images."""
    images = (SimpleNamespace(patient_id=unit_id),) * 2
    return SimpleNamespace(unit_id=unit_id, label=label, mammo=(), histo=images)


def test_scores_are_written_in_the_columns_compare_cv_pairs(tmp_path, baselines):
    scored = [baselines.Scored(1, _unit("u1", "malignant"), 30.0),
              baselines.Scored(1, _unit("u2", "benign"), 29.5),
              baselines.Scored(2, _unit("u3", "normal"), -2.0)]
    path = tmp_path / "histo" / "tile-cnn-quarter" / "seed-0.csv"
    baselines.write_scores(path, "histo", scored)

    rows = load_benchmark("compare_cv").read_predictions(path)
    assert list(rows) == ["u1", "u2", "u3"]
    assert [rows[u]["label"] for u in rows] == ["2", "1", "0"]
    assert [rows[u]["fold"] for u in rows] == ["fold-1", "fold-1", "fold-2"]
    assert [float(rows[u]["score"]) for u in rows] == [30.0, 29.5, -2.0]
    histo = [float(rows[u][PREDICTION_COLUMNS["histo"]]) for u in rows]
    # Scores 0.5 apart near 30 stay apart and in order through the logistic function.
    assert histo[0] > histo[1] > histo[2]
    assert histo[2] == pytest.approx(1 / (1 + math.exp(2.0)))
    assert all(rows[u][PREDICTION_COLUMNS[m]] == "" for u in rows for m in ("mammo", "fused"))
    # The joint CV's pseudo-pairs meet these units through their H&E patients.
    assert [rows[u]["histo_patients"] for u in rows] == ["u1", "u2", "u3"]
    assert all(rows[u]["mammo_patients"] == "" for u in rows)


def test_pooled_auc_ranks_malignant_against_the_rest(baselines):
    scored = [baselines.Scored(1, _unit("a", "malignant"), 0.9),
              baselines.Scored(1, _unit("b", "benign"), 0.95),
              baselines.Scored(2, _unit("c", "normal"), 0.1),
              baselines.Scored(2, _unit("d", "malignant"), 0.5)]
    # Malignant scores 0.9 and 0.5 against 0.95 and 0.1: 2 of the 4 pairs ranked right.
    assert baselines.pooled_auc(scored).value == pytest.approx(0.5)
