"""The report's confusion matrix uses the summary table's operating threshold, and the
report warns when predictions barely vary or rest on a handful of cases."""

import re

import numpy as np

from radpath.evaluation.evaluate import metric_rows
from radpath.evaluation.predict import UnitPredictions
from radpath.evaluation.report import write_report
from radpath.evaluation.summary import spread


def _predictions(label: list[int], prob: list[float]) -> UnitPredictions:
    n = len(label)
    p = np.array(prob)
    return UnitPredictions(
        unit_id=[f"u{i}" for i in range(n)], label=np.array(label), grade=np.full(n, -1),
        has={"mammo": np.ones(n, bool), "histo": np.zeros(n, bool), "fused": np.ones(n, bool)},
        domain={"mammo": ["a"] * n, "histo": [""] * n, "fused": ["all"] * n},
        prob={"mammo": p, "histo": np.full(n, np.nan), "fused": p})


def _report(tmp_path, predictions, threshold):
    thresholds = {(t, m): threshold for t in ("malignancy", "abnormality")
                  for m in ("mammo", "fused")}
    rows = metric_rows(predictions, thresholds=thresholds, n_boot=20)
    page = write_report(tmp_path / "report.html", predictions, rows, {}, n_boot=20).read_text()
    return rows, page


def test_confusion_matrix_counts_follow_the_tables_threshold(tmp_path):
    # Malignant units at 0.40-0.45, others at 0.30-0.39: at 0.5 nothing is positive, at
    # the validation threshold 0.395 every malignant unit is.
    label = [2] * 4 + [0] * 6
    prob = [0.40, 0.42, 0.44, 0.45, 0.30, 0.32, 0.34, 0.36, 0.38, 0.39]
    rows, page = _report(tmp_path, _predictions(label, prob), 0.395)
    table = re.search(r"data-task='malignancy' data-modality='mammo' data-threshold='([\d.]+)'",
                      page)
    assert table and float(table.group(1)) == 0.395
    matrix = re.search(r"confusion malignancy mammo at threshold ([\d.]+): tn=(\d+) fp=(\d+) "
                       r"fn=(\d+) tp=(\d+)", page)
    assert matrix, "the report has no confusion matrix for malignancy / mammo"
    assert float(matrix.group(1)) == float(table.group(1))
    tn, fp, fn, tp = map(int, matrix.groups()[1:])
    sensitivity = next(r for r in rows if r["task"] == "malignancy" and r["modality"] == "mammo"
                       and r["domain"] == "all" and r["metric"] == "sensitivity")
    assert (tp, fn, tn, fp) == (4, 0, 6, 0)
    assert tp / (tp + fn) == sensitivity["value"] == 1.0


def test_flat_predictions_and_few_cases_are_flagged(tmp_path):
    label = [2] * 3 + [0] * 5
    prob = [0.380, 0.381, 0.382, 0.379, 0.378, 0.3785, 0.3775, 0.377]
    assert spread(np.array(prob))["iqr"] < 0.02
    _, page = _report(tmp_path, _predictions(label, prob), 0.3795)
    assert "predictions barely vary" in page
    assert "rests on a handful of cases" in page
    # One line for every output resting on few cases, not one warning each.
    assert page.count("rests on a handful of cases") == 1
    assert "malignancy mammo 3/5" in page
    assert "<details>" in page


def test_varied_well_sampled_predictions_carry_no_warning(tmp_path):
    rng = np.random.default_rng(0)
    label = [2] * 12 + [0] * 12
    prob = np.concatenate([rng.uniform(0.6, 0.9, 12), rng.uniform(0.1, 0.4, 12)]).tolist()
    _, page = _report(tmp_path, _predictions(label, prob), 0.5)
    assert "class='warn'" not in page
