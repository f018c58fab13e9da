from __future__ import annotations

import math

import pytest
import torch

from radpath.adapt import TTAConfig, build_tta
from radpath.adapt.sar import LN2, CollapseGuard, predictions_collapsed, reliable_mask
from radpath.adapt.tent import head_entropies, layernorm_parameters
from tests.adapt import changed_keys, state_copy, tiny_algorithm
from tests.models import random_batch


def _confident_algorithm():
    """Heads scaled up so that the batch mixes confident and uncertain predictions."""
    algorithm = tiny_algorithm()
    with torch.no_grad():
        for head in algorithm.model.heads.values():
            head.fc.weight.mul_(30)
    return algorithm


def _allowed(adapter) -> set[str]:
    backbone = adapter.algorithm.model.backbone
    return {f"model.backbone.{name}" for name, _ in layernorm_parameters(backbone)}


def test_margin_is_e0_ln2_and_filters_high_entropy() -> None:
    assert pytest.approx(math.log(2)) == LN2
    entropy = torch.tensor([0.05, 0.27, 0.3, 0.69])
    assert reliable_mask(entropy, 0.4 * LN2).tolist() == [True, True, False, False]


def test_only_reliable_terms_enter_the_loss() -> None:
    batch = random_batch(units=6)
    adapter = build_tta(_confident_algorithm(), TTAConfig(name="sar"))
    out, loss, reliable = adapter.filtered_loss(batch)
    terms = head_entropies(out, batch, ("mammo", "histo"))
    margin = 0.4 * LN2
    kept = [entropy[mask & (entropy < margin)] for entropy, mask in terms.values()]
    dropped = sum(int((mask & (entropy >= margin)).sum()) for entropy, mask in terms.values())
    assert dropped > 0 and sum(k.numel() for k in kept) > 0
    torch.testing.assert_close(loss, torch.cat(kept).mean())
    for head, (entropy, _) in terms.items():
        assert torch.equal(reliable[head], entropy.detach() < margin)


def test_no_reliable_sample_means_no_update() -> None:
    batch = random_batch()
    algorithm = tiny_algorithm()
    adapter = build_tta(algorithm, TTAConfig(name="sar", sar={"e0": 1e-6}, steps=3))
    source = state_copy(adapter.algorithm)
    out = adapter.adapt_and_predict(batch)
    assert not changed_keys(source, adapter.algorithm)
    torch.testing.assert_close(out["fused_prob"], algorithm.predict(batch)["fused_prob"])


@pytest.mark.parametrize("sam", [False, True])
def test_sar_changes_only_layernorm(sam: bool) -> None:
    algorithm = _confident_algorithm()
    before = state_copy(algorithm)
    adapter = build_tta(algorithm, TTAConfig(name="sar", steps=2, lr=1e-2,
                                             sar={"sam": sam, "reset_threshold": 0.0}))
    source = state_copy(adapter.algorithm)
    out = adapter.adapt_and_predict(random_batch(units=6))
    changed = changed_keys(source, adapter.algorithm)
    assert changed and changed <= _allowed(adapter)
    assert not changed_keys(before, algorithm)
    assert ((out["fused_prob"] >= 0) & (out["fused_prob"] <= 1)).all()


def test_sam_takes_a_different_step_than_plain_gradient() -> None:
    batch = random_batch(units=6)
    states = []
    for sam in (False, True):
        adapter = build_tta(_confident_algorithm(),
                            TTAConfig(name="sar", lr=1e-2, optimizer="sgd",
                                      sar={"sam": sam, "sam_rho": 0.5, "reset_threshold": 0.0}))
        adapter.adapt_and_predict(batch)
        states.append(state_copy(adapter.algorithm))
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_low_loss_average_triggers_a_reset_to_the_source() -> None:
    algorithm, batch = _confident_algorithm(), random_batch(units=6)
    # Any entropy is below 10 ln 2: the moving average signals collapse at the first step.
    adapter = build_tta(algorithm, TTAConfig(name="sar", mode="online", lr=1e-2,
                                             sar={"reset_threshold": 10.0}))
    source = state_copy(adapter.algorithm)
    out = adapter.adapt_and_predict(batch)
    assert adapter.resets == 1
    assert adapter.guard.ema is None
    assert not changed_keys(source, adapter.algorithm)
    assert not adapter.optimizer.state
    torch.testing.assert_close(out["fused_prob"], algorithm.predict(batch)["fused_prob"])
    # Without the threshold the same batch adapts and keeps its weights.
    adapter = build_tta(algorithm, TTAConfig(name="sar", mode="online", lr=1e-2,
                                             sar={"reset_threshold": 0.0}))
    adapter.adapt_and_predict(batch)
    assert adapter.resets == 0 and changed_keys(source, adapter.algorithm)


def test_collapse_guard_moving_average() -> None:
    guard = CollapseGuard(threshold=0.1, momentum=0.5)
    assert not guard.update(0.3)
    assert not guard.update(0.1)  # 0.5 * 0.3 + 0.5 * 0.1 = 0.2
    assert not guard.update(0.0)  # 0.1: not strictly below the threshold
    assert guard.update(0.0)  # 0.05
    guard.clear()
    assert guard.ema is None


def test_prediction_collapse_needs_a_lost_class() -> None:
    mixed, negative = torch.tensor([-1.0, 2.0, -0.5]), torch.tensor([-1.0, -2.0, -0.5])
    assert predictions_collapsed(mixed, negative)
    assert not predictions_collapsed(negative, negative)  # all-normal batches are healthy
    assert not predictions_collapsed(mixed, mixed)
    assert not predictions_collapsed(mixed, negative, torch.tensor([True, False, True]))


def test_prediction_collapse_resets(monkeypatch) -> None:
    algorithm, batch = _confident_algorithm(), random_batch(units=6)
    adapter = build_tta(algorithm, TTAConfig(name="sar", mode="online", lr=1e-2,
                                             sar={"reset_threshold": 0.0}))
    monkeypatch.setattr("radpath.adapt.sar.predictions_collapsed", lambda *a, **k: True)
    source = state_copy(adapter.algorithm)
    out = adapter.adapt_and_predict(batch)
    assert adapter.resets == 1 and not changed_keys(source, adapter.algorithm)
    torch.testing.assert_close(out["fused_prob"], algorithm.predict(batch)["fused_prob"])
