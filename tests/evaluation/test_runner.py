"""radpath evaluate and the LODO benchmark, run for real on a tiny model."""

import csv
import json

import pytest

from radpath.data.manifest import read_manifest, write_manifest
from radpath.errors import RadpathError
from radpath.evaluation.predict import PREDICTION_COLUMNS
from radpath.evaluation.protocols import run_lodo, summary_lines, summary_of
from radpath.evaluation.runner import evaluate_run

KEYS = {"task", "modality", "domain", "metric", "value", "ci_low", "ci_high", "n"}


def test_metrics_json_is_tidy_and_report_embeds_figures(tiny_run, tiny_manifest, tmp_path):
    result = evaluate_run(tiny_run, [tiny_manifest], tmp_path / "eval", split="val",
                          n_boot=100, progress=False)
    rows = json.loads(result.metrics_path.read_text())
    assert rows and all(row.keys() >= KEYS for row in rows)
    assert {r["modality"] for r in rows} >= {"mammo", "histo", "fused"}
    assert {r["task"] for r in rows} >= {"malignancy"}
    aucs = [r for r in rows if r["metric"] == "auc" and r["value"] is not None]
    assert all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in aucs)
    assert any(r["domain"] != "all" for r in rows)
    page = result.report_path.read_text()
    assert page.count("data:image/png;base64,") >= 3 and "src=\"http" not in page


def test_evaluate_scores_the_checkpoint_asked_for(tiny_run, tiny_manifest, tmp_path):
    # Cross-validation of the real-data recipe scores the last epoch: evaluate can too.
    result = evaluate_run(tiny_run, [tiny_manifest], tmp_path / "last", split="val",
                          n_boot=20, progress=False, checkpoint="last")
    assert "<td>last.ckpt</td>" in result.report_path.read_text()
    with pytest.raises(RadpathError, match="'best' or 'last'"):
        evaluate_run(tiny_run, [tiny_manifest], tmp_path / "middle", split="val",
                     progress=False, checkpoint="middle")
    assert not (tmp_path / "middle").exists()


def test_evaluate_writes_each_units_probabilities(tiny_run, tiny_manifest, tmp_path):
    result = evaluate_run(tiny_run, [tiny_manifest], tmp_path / "eval", split="val",
                          n_boot=20, progress=False)
    with result.predictions_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    scored = result.predictions
    assert result.predictions_path == tmp_path / "eval" / "predictions.csv"
    assert [row["unit_id"] for row in rows] == scored.unit_id
    assert {row["fold"] for row in rows} == {"val"}
    assert [int(row["label"]) for row in rows] == scored.label.tolist()
    for modality, column in PREDICTION_COLUMNS.items():
        for row, has, prob in zip(rows, scored.has[modality], scored.prob[modality],
                                  strict=True):
            assert (row[column] != "") == bool(has), (modality, row["unit_id"])
            if has:
                assert float(row[column]) == pytest.approx(float(prob), abs=1e-6)


def test_evaluate_predicts_cases_without_labels(tiny_run, tiny_manifest, tmp_path):
    # New cases come without labels: their probabilities are written, and no metric is made
    # up for them.
    cohort = read_manifest(tiny_manifest)
    unlabelled = write_manifest([r.with_(label="") if r.split == "val" else r for r in cohort],
                                tmp_path / "unlabelled.csv")
    result = evaluate_run(tiny_run, [unlabelled], tmp_path / "eval", split="val", n_boot=20,
                          progress=False)
    with result.predictions_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and {row["label"] for row in rows} == {"-1"}
    assert all(0 < float(row[PREDICTION_COLUMNS["fused"]]) < 1 for row in rows)
    assert not [row for row in result.rows if row["metric"] == "auc"]
    assert f"{len(rows)}: in predictions.csv, in no metric" in result.report_path.read_text()


@pytest.mark.parametrize("adapt", ["tent", "causal"])
def test_adaptation_never_changes_the_checkpoint(tiny_run, tiny_manifest, tmp_path, adapt):
    checkpoint = tiny_run / "checkpoints" / "best.ckpt"
    before = checkpoint.read_bytes()
    result = evaluate_run(tiny_run, [tiny_manifest], tmp_path / adapt, split="val",
                          adapt=adapt, n_boot=50, progress=False)
    assert checkpoint.read_bytes() == before
    assert any(r["metric"] == "auc" for r in result.rows)


def test_lodo_writes_comparison_tables(tiny_manifest, tiny_config, tmp_path):
    manifest = read_manifest(tiny_manifest)
    rows = run_lodo(tiny_config("optim.epochs=1"), manifest, tmp_path / "lodo",
                    algorithms=("erm", "paper"), adaptations=("none", "tent"),
                    holdout=("site-a",), workers=1)
    assert {(r["algorithm"], r["adaptation"]) for r in rows} == {
        ("erm", "none"), ("erm", "tent"), ("paper", "none"), ("paper", "tent")}
    table = (tmp_path / "lodo" / "lodo.md").read_text()
    assert "site-a" in table and "DeLong" in table
    stored = json.loads((tmp_path / "lodo" / "lodo.json").read_text())
    assert all(r["algorithm"] == "erm" or "delong_p_vs_erm" in r for r in stored)


def _lodo_row(algorithm, unseen, gap):
    return {"algorithm": algorithm, "adaptation": "none", "unseen": {"value": unseen},
            "gap": gap}


def test_lodo_summary_leaves_undefined_aucs_out_of_the_means():
    # NaN in fresh rows and None in rows read back from JSON both mean "one class present".
    rows = [_lodo_row("paper", 0.8, 0.1), _lodo_row("erm", 0.6, 0.3),
            _lodo_row("erm", float("nan"), float("nan")), _lodo_row("erm", 0.4, None)]
    summary = summary_of(rows)
    assert list(summary) == [("erm", "none"), ("paper", "none")]
    assert summary[("erm", "none")] == pytest.approx((0.5, 0.3, 3))
    assert summary[("paper", "none")] == pytest.approx((0.8, 0.1, 1))
    assert "| erm | none | 0.500 | 0.300 | 3 |" in summary_lines(rows)
