"""Metric rows: the group of units holding both modalities."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radpath.evaluation.evaluate import BOTH_MODALITIES, groups_of, metric_rows
from radpath.evaluation.predict import UnitPredictions


def _predictions(has_histo: list[bool], label: list[int], fused: list[float]) -> UnitPredictions:
    n = len(label)
    return UnitPredictions(
        unit_id=[f"u{i}" for i in range(n)], label=np.array(label),
        grade=np.full(n, -1), has={"mammo": np.ones(n, dtype=bool),
                                   "histo": np.array(has_histo), "fused": np.ones(n, bool)},
        domain={"mammo": ["a"] * n, "histo": ["s" if h else "" for h in has_histo],
                "fused": ["all"] * n},
        prob={"mammo": np.full(n, 0.5), "histo": np.full(n, 0.5), "fused": np.array(fused)})


def _fused_auc(rows: list[dict], group: str) -> dict:
    return next(r for r in rows if r["task"] == "malignancy" and r["modality"] == "fused"
                and r["domain"] == group and r["metric"] == "auc")


def test_a_head_that_only_knows_who_has_histo_is_at_chance_on_units_with_both():
    # Pseudo-pairs by label: malignant and benign patients have H&E, normals (0) never.
    # A fused score that is just "has H&E" ranks every malignant unit above every normal
    # one, so over all units it looks good; among the units with H&E it knows nothing.
    label = [0, 0, 0, 0, 1, 1, 2, 2, 1, 2]
    has_histo = [False] * 4 + [True] * 6
    fused = [0.1] * 4 + [0.7] * 6
    rows = metric_rows(_predictions(has_histo, label, fused), n_boot=50)
    overall, both = _fused_auc(rows, "all"), _fused_auc(rows, BOTH_MODALITIES)
    # 3 malignant against 7 others: 4 normals below, 3 benign tied (half credit each).
    assert overall["value"] == pytest.approx((3 * 4 + 3 * 3 / 2) / 21, abs=1e-6)
    assert overall["value"] == pytest.approx(roc_auc_score(np.array(label) == 2, fused),
                                             abs=1e-6)
    assert both["n"] == 6 and both["value"] == 0.5


def test_the_group_reads_the_units_with_both_and_keeps_each_modalitys_own():
    predictions = _predictions([False, True, True, False, True], [0, 2, 1, 2, 2],
                               [0.2, 0.9, 0.3, 0.8, 0.4])
    predictions.has["mammo"][4] = False  # an H&E-only unit
    groups = dict(groups_of(predictions, "histo"))
    assert groups[BOTH_MODALITIES].tolist() == [False, True, True, False, False]
    assert groups["all"].tolist() == [False, True, True, False, True]
    assert dict(groups_of(predictions, "fused"))[BOTH_MODALITIES].sum() == 2


def test_no_group_when_every_unit_or_none_holds_both():
    every = _predictions([True] * 4, [0, 2, 1, 2], [0.1, 0.9, 0.2, 0.8])
    none = _predictions([False] * 4, [0, 2, 1, 2], [0.1, 0.9, 0.2, 0.8])
    for predictions in (every, none):
        assert BOTH_MODALITIES not in dict(groups_of(predictions, "fused"))
