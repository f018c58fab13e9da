"""A new algorithm and a new test-time adaptation method, each from one file of its own,
with its own settings, trained / adapted through radpath's own entry points."""

from __future__ import annotations

import pytest
import torch
import yaml

from radpath.adapt import TTAConfig, build_tta
from radpath.algorithms.config import AlgorithmConfig
from radpath.engine.run import train
from tests.adapt import state_copy
from tests.algorithms import tiny_algorithm
from tests.models import random_batch
from tests.plugins import toy_algorithm, toy_tta  # noqa: F401  (registers both)


def test_a_one_file_algorithm_trains_with_its_own_settings(tiny_manifest, tiny_config, tmp_path):
    config = tiny_config("algorithm.name=toy_shrink", "algorithm.toy_shrink.weight=3.0",
                         "optim.epochs=1")
    assert config.algorithm.toy_shrink.weight == 3.0
    result = train(config, [tiny_manifest], tmp_path / "run", workers=1)
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["algorithm"]["name"] == "toy_shrink"
    assert written["algorithm"]["toy_shrink"] == {"weight": 3.0}
    assert result.last_checkpoint.is_file()


def test_the_algorithms_settings_reach_its_loss():
    batch = random_batch()
    weak = tiny_algorithm("toy_shrink", toy_shrink={"weight": 0.0})
    strong = tiny_algorithm("toy_shrink", toy_shrink={"weight": 2.0})
    _, weak_terms = weak.compute_loss(batch)
    _, strong_terms = strong.compute_loss(batch)
    # Same seed, same model: the penalty itself is equal, its weight is the setting's.
    torch.testing.assert_close(weak_terms["shrink"], strong_terms["shrink"])
    assert float(strong_terms["loss"] - weak_terms["loss"]) == pytest.approx(
        2.0 * float(strong_terms["shrink"]), rel=1e-5)


def test_unknown_settings_of_a_one_file_algorithm_are_refused():
    with pytest.raises(ValueError, match=r"algorithm\.toy_shrink"):
        AlgorithmConfig(name="toy_shrink", toy_shrink={"wieght": 1.0})
    with pytest.raises(ValueError, match=r"unknown key\(s\) toy_shrnk"):
        AlgorithmConfig(name="toy_shrink", toy_shrnk={"weight": 1.0})


def test_a_one_file_tta_method_adapts_with_its_own_settings():
    algorithm, batch = tiny_algorithm("erm"), random_batch()
    source = state_copy(algorithm)
    still = build_tta(algorithm, TTAConfig(name="toy_fused_entropy", lr=1e-2,
                                           toy_fused_entropy={"weight": 0.0}))
    moved = build_tta(algorithm, TTAConfig(name="toy_fused_entropy", lr=1e-2, steps=3,
                                           toy_fused_entropy={"weight": 1.0}))
    expected = algorithm.predict(batch)["fused_prob"]
    # Weight 0: no gradient, the source predictions; weight 1: adapted ones.
    torch.testing.assert_close(still.adapt_and_predict(batch)["fused_prob"], expected)
    assert not torch.allclose(moved.adapt_and_predict(batch)["fused_prob"], expected)
    for key, value in algorithm.state_dict().items():  # the caller's copy is untouched
        assert torch.equal(value, source[key]), key
