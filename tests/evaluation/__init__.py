"""Shared checks of the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from radpath.evaluation.predict import UnitPredictions


def assert_mean_logit_of(members: list[UnitPredictions], joint: UnitPredictions) -> None:
    """``joint`` scores each unit, per output, by the mean logit of two different members."""
    first, second = members
    for output in ("mammo", "histo", "fused"):
        assert not np.allclose(first.prob[output], second.prob[output])
        expected = expit((logit(first.prob[output].astype(float))
                          + logit(second.prob[output].astype(float))) / 2)
        assert joint.prob[output] == pytest.approx(expected, rel=1e-6)
