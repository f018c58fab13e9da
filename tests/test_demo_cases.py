"""The demo explains the cases its stated rule picks, and its summary shows the spread."""

from types import SimpleNamespace

import numpy as np

from radpath.demo.cases import choose_cases, spread_lines, spread_records, summary_lines
from radpath.evaluation.evaluate import metric_rows
from radpath.evaluation.predict import UnitPredictions

MALIGNANT, BENIGN, NORMAL = 2, 1, 0


def _predictions(label, fused, has_mammo=None):
    n = len(label)
    has_mammo = np.ones(n, bool) if has_mammo is None else np.array(has_mammo)
    ids = [f"p{i}" for i in range(n)]
    return UnitPredictions(
        unit_id=[f"u{i}" for i in range(n)], label=np.array(label), grade=np.full(n, -1),
        has={"mammo": has_mammo, "histo": np.ones(n, bool), "fused": np.ones(n, bool)},
        domain={"mammo": ["a"] * n, "histo": ["a"] * n, "fused": ["all"] * n},
        prob={"mammo": np.array(fused) * 0.9, "histo": np.array(fused), "fused": np.array(fused)},
        patients={"mammo": [i if m else "" for i, m in zip(ids, has_mammo, strict=True)],
                  "histo": ids})


def test_rule_picks_the_most_confident_hit_and_the_most_confident_error():
    label = [MALIGNANT, MALIGNANT, MALIGNANT, BENIGN, NORMAL, NORMAL]
    fused = [0.90, 0.60, 0.20, 0.70, 0.10, 0.45]
    hit, error = choose_cases(_predictions(label, fused), threshold=0.5)
    assert (hit.role, hit.patient, hit.probability) == ("correct malignant", "p0", 0.90)
    # Errors: p2 (malignant at 0.20, 0.30 below) and p3 (benign at 0.70, 0.20 above).
    assert (error.role, error.patient, error.label) == ("error", "p2", MALIGNANT)
    assert error.histo_patients == ("p2",)
    assert "p2, truly malignant; fused probability 0.200 < threshold 0.500" in error.describe()


def test_rule_skips_units_without_mammograms_and_says_when_none_fits():
    label = [MALIGNANT, MALIGNANT, NORMAL]
    fused = [0.95, 0.80, 0.10]
    hit, = choose_cases(_predictions(label, fused, has_mammo=[False, True, True]), 0.5)
    assert hit.patient == "p1"
    assert choose_cases(_predictions([NORMAL, NORMAL], [0.1, 0.2]), 0.5) == []


def test_threshold_side_is_read_with_enough_decimals():
    hit, = choose_cases(_predictions([MALIGNANT, NORMAL], [0.3802, 0.1]), 0.3801)
    assert "0.3802 >= threshold 0.3801" in hit.describe()


def _result(label, fused):
    predictions = _predictions(label, fused)
    return SimpleNamespace(predictions=predictions, rows=metric_rows(predictions, n_boot=20))


def test_summary_gives_auc_with_ci_and_the_spread_per_modality():
    rng = np.random.default_rng(0)
    label = [MALIGNANT] * 6 + [NORMAL] * 6
    fused = np.concatenate([rng.uniform(0.6, 0.9, 6), rng.uniform(0.1, 0.4, 6)]).tolist()
    result = _result(label, fused)
    records = {r["modality"]: r for r in spread_records(result)}
    assert set(records) == {"mammo", "histo", "fused"}
    fused_record = records["fused"]
    assert fused_record["min"] == min(fused) and fused_record["max"] == max(fused)
    assert fused_record["auc"].startswith("1.000 [") and not fused_record["flat"]
    hit, = choose_cases(result.predictions, 0.5)
    lines = summary_lines({"none": result}, (0.5, "validation"), [(hit, "The model's ...")])
    text = "\n".join(lines)
    assert "not a result about patients" in text and "IQR" in text and "p min" in text
    assert "Operating threshold (fused malignancy): 0.500 (validation)" in text
    assert hit.describe() in text and "WARNING" not in text


def test_flat_predictions_are_flagged_in_the_summary():
    label = [MALIGNANT] * 3 + [NORMAL] * 5
    fused = [0.380, 0.381, 0.382, 0.379, 0.378, 0.3785, 0.3775, 0.377]
    assert all("WARNING: predictions barely vary" in line
               for line in spread_lines(_result(label, fused)))
