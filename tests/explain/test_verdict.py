"""The rationale's call follows the probability and the threshold, never contradicts them."""

import itertools
import re

import numpy as np

from radpath.explain.case import rationale
from radpath.explain.verdict import NOT_SUSPICIOUS, SUSPICIOUS, digits, verdict

CALL = re.compile(r"fused probability (\d\.\d+) is (at or above|below) the operating "
                  r"threshold (\d\.\d+)")


def _data(p: float, threshold: float) -> dict:
    return {"predictions": {"mammo": 0.4, "histo": None, "fused": p}, "regions": [],
            "map_kind": "localisation", "pairing": "none",
            "threshold": {"value": threshold, "source": "validation"}}


def _check(text: str, p: float, threshold: float) -> None:
    found = CALL.search(text)
    assert found, text
    shown_p, side, shown_t = float(found.group(1)), found.group(2), float(found.group(3))
    if p >= threshold:
        assert side == "at or above" and SUSPICIOUS in text and NOT_SUSPICIOUS not in text
        assert shown_p >= shown_t, text
    else:
        assert side == "below" and NOT_SUSPICIOUS in text
        assert shown_p < shown_t, text
    # The printed numbers are the true ones, rounded.
    assert abs(shown_p - p) <= 0.5 * 10 ** -(len(found.group(1)) - 2) + 1e-12
    assert abs(shown_t - threshold) <= 0.5 * 10 ** -(len(found.group(3)) - 2) + 1e-12


def test_the_call_matches_probability_and_threshold_everywhere():
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 41).tolist()
    near = [(t + d, t) for t in rng.uniform(0.05, 0.95, 40) for d in (-1e-4, -3e-3, 0.0, 2e-3)]
    for p, threshold in [*itertools.product(grid, grid), *near]:
        p = float(np.clip(p, 0, 1))
        _check(rationale(_data(p, threshold), []), p, threshold)


def test_the_case_of_issue_40_reads_as_missed_not_as_confident():
    # syn-p017: malignant, fused 0.27 against the validation threshold 0.379.
    text = rationale(_data(0.27, 0.379), [])
    assert "below the operating threshold 0.38 (validation): not suspicious" in text
    assert "confident" not in text and "close to the threshold" not in text


def test_close_numbers_get_enough_decimals_to_keep_their_order():
    assert digits(0.379, 0.381) == 3
    assert "0.379 is below the operating threshold 0.380" in verdict(0.3791, 0.3795)
    assert "0.3801 is below the operating threshold 0.3804" in verdict(0.3801, 0.3804)
    assert "(within 0.0003)" in verdict(0.3801, 0.3804)
    assert "uncertain" in verdict(0.42, 0.40) and "far from" in verdict(0.95, 0.40)


def test_explanations_without_a_threshold_say_the_default():
    data = _data(0.6, 0.5)
    del data["threshold"]
    assert "threshold 0.50 (default 0.5): suspicious" in rationale(data, [])
