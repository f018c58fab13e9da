"""benchmarks/colored_digits.py: the construction is the one stated, and radpath's
algorithms train on it through the engine (the known answer itself is the benchmark's)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def digits():
    return load_benchmark("colored_digits")


def _colour(env) -> torch.Tensor:
    """Which channel holds the digit."""
    return (env.images[:, 1].flatten(1).sum(1) > 0).float()


def test_colour_agrees_with_the_label_at_the_stated_rates(digits):
    envs, test = digits.colored_digits(0)
    assert [len(e.labels) for e in envs] == [digits.ENV_DRAWS] * 2
    assert len(test.labels) == 1797 - digits.TRAIN_IMAGES
    for env, flip in zip(envs, digits.TRAIN_FLIPS, strict=True):
        agreement = float((_colour(env) == env.labels).float().mean())
        assert agreement == pytest.approx(1 - flip, abs=0.02)
    assert float((_colour(test) == test.labels).float().mean()) == pytest.approx(
        1 - digits.TEST_FLIP, abs=0.05)
    # One channel only holds the digit.
    assert bool(((envs[0].images[:, 0].flatten(1).sum(1) > 0)
                 != (envs[0].images[:, 1].flatten(1).sum(1) > 0)).all())


def test_grey_oracle_removes_the_colour(digits):
    envs, test = digits.colored_digits(0, grey=True)
    assert torch.equal(envs[0].images[:, 0], envs[0].images[:, 1])
    assert torch.equal(test.images[:, 0], test.images[:, 1])


@pytest.mark.parametrize("method", ["irm", "paper", "mixstyle"])
def test_radpath_methods_train_through_the_engine(digits, method):
    result = digits.train_radpath(method, 0, steps=3, train_draws=64, hidden=8)
    assert set(result) == {"test_accuracy", "train_accuracy"}
    assert all(0.0 <= value <= 1.0 for value in result.values())


def test_table_names_every_row_with_its_spread(digits):
    table = digits.summary({"erm": [{"test_accuracy": 0.2, "train_accuracy": 0.8},
                                    {"test_accuracy": 0.3, "train_accuracy": 0.9}]})
    assert table["erm"]["test_accuracy_mean"] == pytest.approx(0.25)
    assert table["erm"]["test_accuracy_sd"] == pytest.approx(0.0707, abs=1e-4)
    text = digits.markdown(table, [0, 1], 1.0, jobs=2)
    assert "| erm | 0.250 ± 0.071 | 0.850 ± 0.071 | 0.200, 0.300 |" in text



def test_every_row_runs_by_name_with_its_own_settings(digits, monkeypatch):
    """Workers get a row's name: each name must reach its method with its settings."""
    calls = []
    monkeypatch.setattr(digits, "train_radpath", lambda *a, **k: calls.append((a, k)) or {})
    monkeypatch.setattr(digits, "train_sketch", lambda *a, **k: calls.append((a, k)) or {})
    for name in ("oracle", "irm_split", "sketch_irm", "coral"):
        digits.run_cell(name, 3)
    assert calls == [(("erm", 3), {"grey": True}),
                     (("irm", 3), {"irm": {**digits.PAPER_IRM, "estimator": "split"}}),
                     ((3,), {"irm": True}),
                     (("coral", 3), {})]
