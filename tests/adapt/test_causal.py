from __future__ import annotations

import pytest
import torch

from radpath.adapt import TTAConfig, build_tta
from radpath.adapt.causal import (
    agreement_mask,
    head_logits,
    nuisance_directions,
    project_out,
)
from radpath.adapt.interventions import InterventionConfig, adjust_hed, intervene
from radpath.adapt.tent import layernorm_parameters
from radpath.models.heads import BinaryHead, OrdinalHead
from tests.adapt import changed_keys, state_copy, tiny_algorithm
from tests.models import random_batch


def _batch(**kwargs) -> dict[str, torch.Tensor]:
    """A random batch with images in the ranges the data module produces."""
    batch = random_batch(**kwargs)
    valid_m = (batch["mammo_mask"] & batch["has_mammo"][:, None])[..., None, None, None]
    valid_h = (batch["histo_mask"] & batch["has_histo"][:, None])[..., None, None, None]
    gen = torch.Generator().manual_seed(7)
    mammo = torch.rand(batch["mammo"].shape, generator=gen)
    rgb = 0.3 + 0.6 * torch.rand(batch["histo"].shape, generator=gen)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    batch["mammo"] = (mammo - 0.5) / 0.25 * valid_m
    batch["histo"] = (rgb - mean) / std * valid_h
    return batch


def _only(batch: dict[str, torch.Tensor], modality: str) -> dict[str, torch.Tensor]:
    other = "histo" if modality == "mammo" else "mammo"
    batch = dict(batch)
    batch[f"{other}_mask"] = torch.zeros_like(batch[f"{other}_mask"])
    batch[f"has_{other}"] = torch.zeros_like(batch[f"has_{other}"])
    batch[other] = torch.zeros_like(batch[other])
    return batch


# ---------------------------------------------------------------- interventions


def test_interventions_copy_change_and_respect_masks() -> None:
    batch = _batch()
    saved = {k: v.clone() for k, v in batch.items()}
    out = intervene(batch, torch.Generator().manual_seed(0), ("mammo", "histo"))
    for key, value in saved.items():
        assert torch.equal(batch[key], value), key
    for modality in ("mammo", "histo"):
        valid = batch[f"{modality}_mask"] & batch[f"has_{modality}"][:, None]
        assert out[modality] is not batch[modality]
        assert torch.all(out[modality][~valid] == 0)
        # every existing image changed
        diff = (out[modality] - batch[modality]).abs().flatten(2).amax(dim=2)
        assert bool((diff[valid] > 0).all())
        assert torch.isfinite(out[modality]).all()
    assert out["mammo"].min() >= -2 - 1e-5 and out["mammo"].max() <= 2 + 1e-5
    assert torch.equal(out["label"], batch["label"])


def test_interventions_are_reproducible_and_touch_only_their_modality() -> None:
    batch = _batch()
    first = intervene(batch, torch.Generator().manual_seed(3), "histo")
    again = intervene(batch, torch.Generator().manual_seed(3), "histo")
    other = intervene(batch, torch.Generator().manual_seed(4), "histo")
    assert torch.equal(first["histo"], again["histo"])
    assert not torch.equal(first["histo"], other["histo"])
    assert first["mammo"] is batch["mammo"]
    with pytest.raises(ValueError, match="modality"):
        intervene(batch, torch.Generator(), "ct")


def test_hed_jitter_identity_and_strength() -> None:
    rgb = 0.2 + 0.7 * torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ones, zeros = torch.ones(2, 3), torch.zeros(2, 3)
    torch.testing.assert_close(adjust_hed(rgb, ones, zeros), rgb, atol=1e-5, rtol=0)
    strong = adjust_hed(rgb, ones, torch.tensor([[0.1, 0.0, 0.0]] * 2))
    assert (strong <= rgb + 1e-6).all()  # more haematoxylin only darkens
    config = InterventionConfig(stain_sigma=0, stain_bias=0, brightness=0, noise_std=0,
                                window_shift=0, gamma_range=(1.0, 1.0))
    batch = _batch()
    out = intervene(batch, torch.Generator().manual_seed(0), ("mammo", "histo"), config)
    torch.testing.assert_close(out["histo"], batch["histo"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["mammo"], batch["mammo"], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- pure functions


def _nuisance_features(k: int = 6, b: int = 5, d: int = 16):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(b, d, generator=gen)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)
    amounts = torch.randn(k, b, 1, generator=gen)
    return base, direction, base[None] + amounts * direction


def test_directions_recover_a_known_nuisance_and_projection_removes_it() -> None:
    _, direction, features = _nuisance_features()
    noisy = features + 0.01 * torch.randn(features.shape,
                                          generator=torch.Generator().manual_seed(1))
    u = nuisance_directions(noisy, k=1)
    assert u.shape == (16, 1)
    assert abs(float(u[:, 0] @ direction)) > 0.99
    torch.testing.assert_close(u.T @ u, torch.eye(1))
    projected = project_out(noisy, u)
    along = (projected @ u).squeeze(-1)  # (K, B)
    assert float(along.var(dim=0).max()) < 1e-10
    assert float((noisy @ u).squeeze(-1).var(dim=0).mean()) > 0.1
    # the rank decides: one direction of variation gives one direction, whatever k
    assert nuisance_directions(features, k=4).shape == (16, 1)
    assert nuisance_directions(features[:, :0], k=4).shape == (16, 0)
    assert nuisance_directions(features.new_ones(3, 2, 16), k=2).shape == (16, 0)
    mask = torch.tensor([True, False, True, False, False])
    assert nuisance_directions(features, k=2, mask=mask).shape == (16, 1)
    with pytest.raises(ValueError, match="K, B, D"):
        nuisance_directions(features[0], k=1)


@torch.no_grad()
def test_nuisance_only_variation_gives_identical_logits_after_removal() -> None:
    torch.manual_seed(0)
    _, direction, z = _nuisance_features(d=64)
    u = nuisance_directions(z, k=2)
    assert u.shape == (64, 1) and abs(float(u[:, 0] @ direction)) > 0.999
    for head in (BinaryHead(64), OrdinalHead(64, 3)):
        plain = torch.stack([head.fc(version) for version in z])
        assert float((plain - plain[0]).abs().max()) > 1e-3
        logits = torch.stack([head_logits(head, version, u) for version in z])
        torch.testing.assert_close(logits, logits[:1].expand_as(logits), atol=1e-5, rtol=0)
        # the prototype keeps nothing along the nuisance, its bias is untouched
        assert float((project_out(head.fc.weight, u) @ u).abs().max()) < 1e-6
    # no directions: the head's own logits
    head, feats = BinaryHead(64), torch.randn(4, 64)
    torch.testing.assert_close(head_logits(head, head.norm(feats), feats.new_zeros(64, 0)),
                               head(feats))


def test_agreement_mask() -> None:
    logits = torch.tensor([[1.0, -1.0, 2.0], [0.5, -2.0, -0.1], [3.0, -0.1, 1.0]])
    assert agreement_mask(logits).tolist() == [True, True, False]


# ---------------------------------------------------------------- the adapter


def _config(sar: dict | None = None, steps: int = 1, lr: float = 1e-3, **causal) -> TTAConfig:
    return TTAConfig(name="causal", steps=steps, lr=lr, sar=sar or {},
                     causal={"n_interventions": 3, "n_directions": 2, **causal})


def test_causal_without_directions_is_the_source_model() -> None:
    algorithm, batch = tiny_algorithm(), _batch()
    out = build_tta(algorithm, _config(n_directions=0))(batch)
    expected = algorithm.predict(batch)
    assert out.keys() == expected.keys()
    for key in ("mammo_prob", "histo_prob", "fused_prob", "grade_prob"):
        torch.testing.assert_close(out[key], expected[key])


def test_causal_predicts_on_mixed_batches_and_leaves_the_source_alone(tmp_path) -> None:
    algorithm, batch = tiny_algorithm(), _batch()
    before = state_copy(algorithm)
    adapter = build_tta(algorithm, _config(nuisance_ratio=0.0))  # remove all k directions
    source = state_copy(adapter.algorithm)
    out = adapter.adapt_and_predict(batch)
    expected = algorithm.predict(batch)
    assert out.keys() == expected.keys()
    for key in ("mammo_prob", "histo_prob", "fused_prob"):
        assert ((out[key] >= 0) & (out[key] <= 1)).all()
    assert not torch.allclose(out["fused_prob"], expected["fused_prob"])
    torch.testing.assert_close(out["grade_prob"].sum(dim=1), torch.ones(4))
    assert set(adapter.last_directions) == {"mammo", "histo", "fused", "grade"}
    assert all(u.shape[0] == 64 and u.shape[1] <= 2 for u in adapter.last_directions.values())
    assert not changed_keys(before, algorithm)
    assert not changed_keys(source, adapter.algorithm)  # no adapt_norm: no weight moves
    # units without a modality keep the source's output for it
    torch.testing.assert_close(out["histo_prob"][1], expected["histo_prob"][1])
    # episodic: the same batch gives the same answer
    assert torch.equal(adapter.adapt_and_predict(batch)["fused_prob"], out["fused_prob"])


@pytest.mark.parametrize("modality", ["mammo", "histo"])
def test_causal_with_a_single_modality(modality: str) -> None:
    algorithm, batch = tiny_algorithm(num_grades=0), _only(_batch(), modality)
    adapter = build_tta(algorithm, _config(adapt_norm=True, sar={"reset_threshold": 0.0}))
    out = adapter.adapt_and_predict(batch)
    for key in ("mammo_prob", "histo_prob", "fused_prob"):
        assert torch.isfinite(out[key]).all()
        assert ((out[key] >= 0) & (out[key] <= 1)).all()
    assert set(adapter.last_directions) == {modality, "fused"}


def test_adapt_norm_changes_only_layernorm_on_agreeing_samples() -> None:
    algorithm, batch = tiny_algorithm(), _batch()
    adapter = build_tta(algorithm, _config(adapt_norm=True, steps=2, lr=1e-2,
                                           sar={"reset_threshold": 0.0}))
    source = state_copy(adapter.algorithm)
    out = adapter.adapt_and_predict(batch)
    changed = changed_keys(source, adapter.algorithm)
    backbone = adapter.algorithm.model.backbone
    allowed = {f"model.backbone.{name}" for name, _ in layernorm_parameters(backbone)}
    assert changed and changed <= allowed
    assert ((out["fused_prob"] >= 0) & (out["fused_prob"] <= 1)).all()


def test_adapt_norm_skips_when_no_prediction_agrees(monkeypatch) -> None:
    monkeypatch.setattr("radpath.adapt.causal.agreement_mask",
                        lambda logits: torch.zeros(logits.shape[1], dtype=torch.bool))
    adapter = build_tta(tiny_algorithm(), _config(adapt_norm=True, lr=1e-2))
    source = state_copy(adapter.algorithm)
    adapter.adapt_and_predict(_batch())
    assert not changed_keys(source, adapter.algorithm)


def test_directions_where_cases_differ_more_than_imaging_are_kept() -> None:
    from radpath.adapt.causal import nuisance_directions

    generator = torch.Generator().manual_seed(0)
    cases = torch.zeros(16, 3)
    cases[:, 0] = torch.randn(16, generator=generator) * 5.0  # content: cases differ a lot
    versions = cases.expand(6, 16, 3).clone()
    versions[..., 0] += torch.randn(6, 16, generator=generator) * 0.5  # small nuisance
    versions[..., 1] += torch.randn(6, 16, generator=generator) * 2.0  # pure nuisance
    kept = nuisance_directions(versions, 2, min_ratio=1.0)
    assert kept.shape[1] == 1 and abs(float(kept[1, 0])) > 0.99
    assert nuisance_directions(versions, 2, min_ratio=0.0).shape[1] == 2
