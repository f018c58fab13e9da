"""Several runs scored as one: the mean logit per unit, checked on known answers and on
two real tiny runs."""

import numpy as np
import pytest

from radpath.errors import RadpathError
from radpath.evaluation.ensemble import ensemble_predictions, mean_logit
from radpath.evaluation.predict import UnitPredictions, ViewResult
from radpath.evaluation.runner import evaluate_run
from tests.evaluation import assert_mean_logit_of


def _predictions(probs: list[float], *, units=None, labels=None,
                 heatmap=None) -> UnitPredictions:
    n = len(probs)
    views = [] if heatmap is None else [
        ViewResult(0, "view", "a", np.asarray(heatmap, dtype=float), np.zeros((0, 3)), 64,
                   np.zeros((64, 64), np.float32))]
    return UnitPredictions(
        unit_id=units or [f"u{i}" for i in range(n)],
        label=np.array(labels or [i % 2 for i in range(n)]), grade=np.full(n, -1),
        has={m: np.ones(n, bool) for m in ("mammo", "histo", "fused")},
        domain={m: ["a"] * n for m in ("mammo", "histo", "fused")},
        prob={"mammo": np.array(probs), "histo": 1 - np.array(probs),
              "fused": np.full(n, 0.5)},
        views=views)


def test_mean_logit_known_answers():
    # logit 0.5 = 0, logit 0.9 = ln 9; their mean ln 3 -> 0.75.
    assert mean_logit([np.array([0.5]), np.array([0.9])]) == pytest.approx([0.75])
    # Opposite votes of equal strength cancel; one member is returned as it was.
    assert mean_logit([np.array([0.2]), np.array([0.8])]) == pytest.approx([0.5])
    assert mean_logit([np.array([0.3, 0.7])]) == pytest.approx([0.3, 0.7])
    # A saturated member is clipped, not an infinite vote.
    assert 0.5 < mean_logit([np.array([1.0]), np.array([0.1])])[0] < 1.0


def test_ensemble_averages_every_output_and_map():
    a = _predictions([0.5, 0.9, 0.2], heatmap=[[0.0, 2.0]])
    b = _predictions([0.9, 0.5, 0.8], heatmap=[[1.0, 4.0]])
    both = ensemble_predictions([a, b])
    assert both.prob["mammo"] == pytest.approx([0.75, 0.75, 0.5])
    assert both.prob["histo"] == pytest.approx([0.25, 0.25, 0.5])
    assert both.prob["fused"] == pytest.approx([0.5, 0.5, 0.5])
    assert both.views[0].heatmap.tolist() == [[0.5, 3.0]]
    assert a.prob["mammo"].tolist() == [0.5, 0.9, 0.2]  # the members are left as they were


def test_ensemble_refuses_members_that_scored_other_things():
    base = _predictions([0.5, 0.9])
    with pytest.raises(RadpathError, match="run B scored other units than run A"):
        ensemble_predictions([base, _predictions([0.5, 0.9], units=["u0", "x"])],
                             ["run A", "run B"])
    with pytest.raises(RadpathError, match="disagree on the units' labels"):
        ensemble_predictions([base, _predictions([0.5, 0.9], labels=[1, 1])])
    with pytest.raises(RadpathError, match="another grid"):
        ensemble_predictions([_predictions([0.5, 0.9], heatmap=[[0.0, 1.0]]),
                              _predictions([0.5, 0.9], heatmap=[[0.0], [1.0]])])
    graded = _predictions([0.5, 0.9])
    graded.grade_prob = np.full((2, 3), 1 / 3)
    with pytest.raises(RadpathError, match="grade differently"):
        ensemble_predictions([base, graded])
    with pytest.raises(RadpathError, match="at least one run"):
        ensemble_predictions([])


def test_evaluating_two_runs_scores_their_mean_logit(tiny_run, second_tiny_run, tiny_manifest,
                                                      tmp_path):
    alone = [evaluate_run(run, [tiny_manifest], tmp_path / name, split="val", n_boot=20,
                          progress=False).predictions
             for name, run in (("a", tiny_run), ("b", second_tiny_run))]
    joint = evaluate_run([tiny_run, second_tiny_run], [tiny_manifest], tmp_path / "ab",
                         split="val", n_boot=20, progress=False)
    assert_mean_logit_of(alone, joint.predictions)
    assert "mean logit of 2 runs per unit" in joint.report_path.read_text()
