from __future__ import annotations

import pydantic
import pytest
import torch

from radpath.adapt import TTA_METHODS, TTAConfig, build_tta
from radpath.adapt.tent import binary_entropy, layernorm_parameters
from radpath.errors import RadpathError
from tests.adapt import (
    changed_keys,
    layernorm_names,
    state_copy,
    tiny_algorithm,
)
from tests.models import random_batch


def _mean_entropy(probs: torch.Tensor) -> float:
    return float(binary_entropy(torch.logit(probs)).mean())


def test_registry_config_and_the_identity_adapter() -> None:
    assert {"none", "tent", "sar", "causal"} <= set(TTA_METHODS.names())
    with pytest.raises(pydantic.ValidationError):
        TTAConfig(unknown=1)
    with pytest.raises(pydantic.ValidationError):
        TTAConfig(modalities=("mammo", "mammo"))
    with pytest.raises(RadpathError, match="known"):
        build_tta(tiny_algorithm(), TTAConfig(name="nope"))
    algorithm, batch = tiny_algorithm(), random_batch()
    out = build_tta(algorithm, TTAConfig(name="none")).adapt_and_predict(batch)
    expected = algorithm.predict(batch)
    assert out.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(out[key], expected[key])


def test_binary_entropy_matches_the_definition_and_is_stable() -> None:
    logits = torch.tensor([-3.0, 0.0, 2.0])
    p = torch.sigmoid(logits)
    expected = -(p * p.log() + (1 - p) * (1 - p).log())
    torch.testing.assert_close(binary_entropy(logits), expected)
    assert torch.isfinite(binary_entropy(torch.tensor([-1e4, 1e4]))).all()


def test_layernorm_parameters_finds_every_affine_layernorm() -> None:
    model = tiny_algorithm().model
    names = {name for name, _ in layernorm_parameters(model.backbone)}
    assert names == {n.removeprefix("backbone.") for n in layernorm_names(model)
                     if n.startswith("backbone.")}
    assert any("adapters" in n for n in names) and any("blocks" in n for n in names)
    assert all(n.endswith((".weight", ".bias")) for n in names)


def test_tent_changes_only_layernorm_and_lowers_entropy() -> None:
    algorithm, batch = tiny_algorithm(), random_batch()
    adapter = build_tta(algorithm, TTAConfig(name="tent", steps=5, lr=1e-2))
    source = state_copy(adapter.algorithm)
    before = algorithm.predict(batch)
    out = adapter.adapt_and_predict(batch)
    changed = changed_keys(source, adapter.algorithm)
    backbone = adapter.algorithm.model.backbone
    allowed = {f"model.backbone.{name}" for name, _ in layernorm_parameters(backbone)}
    assert changed and changed <= allowed
    trainable = {n for n, p in adapter.algorithm.named_parameters() if p.requires_grad}
    assert trainable and all("norm" in n for n in trainable)
    assert _mean_entropy(out["fused_prob"]) < _mean_entropy(before["fused_prob"])
    assert out.keys() == before.keys()


def test_reset_restores_weights_and_optimizer_exactly() -> None:
    adapter = build_tta(tiny_algorithm(), TTAConfig(name="tent", mode="online", steps=2))
    source = state_copy(adapter.algorithm)
    adapter.adapt_and_predict(random_batch(seed=1))
    assert changed_keys(source, adapter.algorithm)
    assert adapter.optimizer.state  # Adam moments exist
    adapter.reset()
    assert not changed_keys(source, adapter.algorithm)
    assert not adapter.optimizer.state
    # After a reset, the next batch is adapted exactly as by a fresh adapter.
    fresh = build_tta(tiny_algorithm(), TTAConfig(name="tent", mode="online", steps=2))
    batch = random_batch(seed=2)
    torch.testing.assert_close(adapter.adapt_and_predict(batch)["fused_prob"],
                               fresh.adapt_and_predict(batch)["fused_prob"], rtol=0, atol=0)


def test_episodic_repeats_and_online_accumulates() -> None:
    batch = random_batch()
    episodic = build_tta(tiny_algorithm(), TTAConfig(name="tent", steps=2, lr=1e-2))
    first = episodic.adapt_and_predict(batch)["fused_prob"]
    second = episodic.adapt_and_predict(batch)["fused_prob"]
    assert torch.equal(first, second)
    online = build_tta(tiny_algorithm(), TTAConfig(name="tent", mode="online", steps=2,
                                                   lr=1e-2))
    assert torch.equal(online.adapt_and_predict(batch)["fused_prob"], first)
    assert not torch.equal(online.adapt_and_predict(batch)["fused_prob"], first)


def test_source_algorithm_and_checkpoint_are_untouched(tmp_path) -> None:
    algorithm, batch = tiny_algorithm(), random_batch()
    checkpoint = tmp_path / "source.pt"
    torch.save(algorithm.state_dict(), checkpoint)
    written = checkpoint.read_bytes()
    before = state_copy(algorithm)
    grads = {n: p.requires_grad for n, p in algorithm.named_parameters()}
    adapter = build_tta(algorithm, TTAConfig(name="tent", mode="online", steps=3, lr=1e-2))
    adapter.adapt_and_predict(batch)
    adapter.adapt_and_predict(random_batch(seed=3))
    assert not changed_keys(before, algorithm)
    assert grads == {n: p.requires_grad for n, p in algorithm.named_parameters()}
    assert all(p.grad is None for p in algorithm.parameters())
    assert checkpoint.read_bytes() == written
    assert [p.name for p in tmp_path.iterdir()] == ["source.pt"]


def test_adapts_under_no_grad_and_single_modality_batches() -> None:
    batch = random_batch()
    batch["histo_mask"][:] = False
    batch["has_histo"][:] = False
    adapter = build_tta(tiny_algorithm(), TTAConfig(name="tent", modalities=("mammo",)))
    source = state_copy(adapter.algorithm)
    with torch.no_grad():
        out = adapter.adapt_and_predict(batch)
    assert changed_keys(source, adapter.algorithm)
    assert ((out["fused_prob"] >= 0) & (out["fused_prob"] <= 1)).all()
