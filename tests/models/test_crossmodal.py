from __future__ import annotations

import pydantic
import pytest
import torch

from radpath.batch.tensors import valid_rows
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig
from tests.models import CountingMixStyle, random_batch

B, V, T, D = 4, 2, 3, 64


def _model(seed: int = 0, **backbone: object) -> CrossModalModel:
    torch.manual_seed(seed)
    config = ModelConfig(backbone=BackboneConfig(img_size=32, histo_img_size=32, **backbone),
                         projection_dim=16, num_grades=3)
    return CrossModalModel(config)


def test_output_shapes_on_a_mixed_batch() -> None:
    out = _model()(random_batch())
    expected = {
        "mammo_logit": (B,), "histo_logit": (B,), "fused_logit": (B,),
        "mammo_feat": (B, D), "histo_feat": (B, D), "fused_feat": (B, D),
        "mammo_proj": (B, 16), "histo_proj": (B, 16),
        "mammo_attention": (B, V), "histo_attention": (B, T), "histo_tile_logit": (B, T),
        "grade_logits": (B, 2), "token_scores": (B, V, 4, 4), "view_logit": (B, V),
        "mammo_view_logit": (B, V),
    }
    assert {k: tuple(v.shape) for k, v in out.items()} == expected
    assert all(torch.isfinite(v).all() for v in out.values())


def test_missing_modalities_and_views_are_zero_and_fused_stays_finite() -> None:
    batch = random_batch()
    out = _model()(batch)
    # Unit 1 has no tiles, unit 2 no mammograms; unit 0 lacks its second view.
    assert torch.all(out["histo_feat"][1] == 0) and torch.all(out["histo_attention"][1] == 0)
    assert torch.all(out["mammo_feat"][2] == 0) and torch.all(out["mammo_attention"][2] == 0)
    assert torch.all(out["token_scores"][0, 1] == 0) and out["view_logit"][0, 1] == 0
    assert out["mammo_view_logit"][0, 1] == 0 and torch.all(out["mammo_view_logit"][2] == 0)
    torch.testing.assert_close(out["fused_feat"][1], out["mammo_feat"][1])
    torch.testing.assert_close(out["fused_feat"][2], out["histo_feat"][2])
    torch.testing.assert_close(out["fused_feat"][3],
                               (out["mammo_feat"][3] + out["histo_feat"][3]) / 2)
    torch.testing.assert_close(out["mammo_attention"].sum(1), batch["has_mammo"].float())


def test_modality_absent_from_the_whole_batch_is_skipped() -> None:
    batch = random_batch()
    batch["mammo_mask"][:] = False
    batch["has_mammo"][:] = False
    out = _model()(batch)
    assert torch.all(out["mammo_feat"] == 0) and torch.all(out["token_scores"] == 0)
    assert torch.isfinite(out["fused_logit"]).all()


def test_mammo_adapter_gets_no_gradient_from_a_histo_only_batch() -> None:
    batch = random_batch()
    batch["mammo_mask"][:] = False
    batch["has_mammo"][:] = False
    model = _model()
    out = model(batch)
    (out["fused_logit"].sum() + out["histo_proj"].pow(2).sum()).backward()
    adapters = model.backbone.adapters
    assert all(p.grad is None for p in adapters["mammo"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in adapters["histo"].parameters())


def test_gradients_reach_both_patch_embeddings_in_a_mixed_batch() -> None:
    model = _model()
    model(random_batch())["fused_logit"].sum().backward()
    for modality in ("mammo", "histo"):
        grad = model.backbone.patch_embed[modality].proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0


def test_unshared_backbone_model_runs() -> None:
    model = _model(shared=False, adapter="lora")
    out = model(random_batch())
    assert out["fused_logit"].shape == (B,) and torch.isfinite(out["fused_logit"]).all()


def test_same_seed_gives_identical_models() -> None:
    batch = random_batch()
    first, second = _model(seed=0)(batch), _model(seed=0)(batch)
    for key, value in first.items():
        torch.testing.assert_close(second[key], value, rtol=0, atol=0)
    assert not torch.equal(_model(seed=1)(batch)["fused_logit"], first["fused_logit"])


def test_mixstyle_is_called_per_layer_and_modality_with_view_domains() -> None:
    mixstyle = CountingMixStyle()
    batch = random_batch()
    _model(mixstyle_layers=(0, 1))(batch, mixstyle=mixstyle)
    assert len(mixstyle.calls) == 4
    mammo_views = int(batch["mammo_mask"].sum())
    shape, domains = mixstyle.calls[0]
    assert shape[0] == mammo_views and domains.tolist() == [0, 1, 1, 1, 1]


def test_larger_images_change_the_token_map() -> None:
    out = _model()(random_batch(size=48, histo_size=40))
    assert out["token_scores"].shape == (B, V, 6, 6)


def test_encode_images_returns_cls_and_patch_tokens() -> None:
    cls, patches = _model().encode_images(torch.randn(5, 3, 32, 32), "histo")
    assert cls.shape == (5, D) and patches.shape == (5, 16, D)


def test_parameter_groups_partition_the_parameters() -> None:
    for adapter in ("bottleneck", "lora"):
        model = _model(adapter=adapter)
        groups = model.parameter_groups()
        ids = [id(p) for group in groups.values() for p in group]
        assert len(ids) == len(set(ids)) == len(list(model.parameters()))
        assert all(groups.values())


def test_optional_heads_can_be_switched_off() -> None:
    model = CrossModalModel(ModelConfig(backbone=BackboneConfig(img_size=32, histo_img_size=32),
                                        localisation=False))
    out = model(random_batch())
    assert not {"grade_logits", "token_scores", "view_logit"} & set(out)


def _scored_and_pooled(option: str, value: str) -> tuple[CrossModalModel, CrossModalModel]:
    """A model scoring units with ``option=value`` and one with the same weights scoring
    them through the attention-pooled feature, both in eval mode."""
    torch.manual_seed(0)
    config = ModelConfig(backbone=BackboneConfig(img_size=32, histo_img_size=32),
                         **{option: value})
    scored = CrossModalModel(config).eval()
    pooled = CrossModalModel(config.model_copy(update={option: "attention"}))
    pooled.load_state_dict(scored.state_dict())
    return scored, pooled.eval()


def test_tile_mean_score_is_the_mean_of_the_valid_tiles_logits() -> None:
    batch = random_batch()  # unit 0 has tiles 0-1, unit 1 none, unit 2 tiles 0 and 2
    model, attention = _scored_and_pooled("histo_score", "tile_mean")
    out = model(batch)
    tiles = out["histo_tile_logit"]
    torch.testing.assert_close(out["histo_logit"][0], tiles[0, :2].mean())
    torch.testing.assert_close(out["histo_logit"][2], tiles[2, [0, 2]].mean())
    torch.testing.assert_close(out["histo_logit"][3], tiles[3].mean())
    # A unit without tiles keeps the head's answer to its (zero) pooled feature.
    torch.testing.assert_close(out["histo_logit"][1],
                               model.heads["histo"](out["histo_feat"][1:2])[0])
    pooled = attention(batch)
    torch.testing.assert_close(pooled["histo_tile_logit"], tiles)
    assert not torch.allclose(pooled["histo_logit"][[0, 3]], out["histo_logit"][[0, 3]])


def test_view_max_score_is_the_highest_valid_view_logit() -> None:
    batch = random_batch()  # unit 0 has view 0 only, unit 2 no mammograms
    model, attention = _scored_and_pooled("mammo_score", "view_max")
    out = model(batch)
    with torch.no_grad():
        cls, _ = model.encode_images(batch["mammo"][3], "mammo")
        alone = model.heads["mammo"](cls)
    torch.testing.assert_close(out["mammo_view_logit"][3], alone)
    views = out["mammo_view_logit"]
    torch.testing.assert_close(out["mammo_logit"][0], views[0, 0])
    torch.testing.assert_close(out["mammo_logit"][3], views[3].max())
    # A unit without mammograms keeps the head's answer to its (zero) pooled feature.
    torch.testing.assert_close(out["mammo_logit"][2],
                               model.heads["mammo"](out["mammo_feat"][2:3])[0])
    pooled = attention(batch)
    torch.testing.assert_close(pooled["mammo_view_logit"], views)
    torch.testing.assert_close(pooled["mammo_logit"], model.heads["mammo"](out["mammo_feat"]))
    assert not torch.allclose(pooled["mammo_logit"][[0, 3]], out["mammo_logit"][[0, 3]])


@pytest.mark.parametrize("bad", [{"num_grades": 1}, {"projection_dim": 0}, {"heads": 2},
                                 {"histo_score": "max"}, {"mammo_score": "mean"}])
def test_model_config_rejects_invalid_values(bad: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        ModelConfig(**bad)


def _bilateral_model(seed: int = 0) -> CrossModalModel:
    torch.manual_seed(seed)
    config = ModelConfig(backbone=BackboneConfig(img_size=32, histo_img_size=32),
                         projection_dim=16, bilateral=True)
    return CrossModalModel(config).eval()


def test_bilateral_asymmetry_is_off_by_default_and_needs_both_sides() -> None:
    assert ModelConfig().bilateral is False and _model().asymmetry is None
    model = _bilateral_model()
    batch = random_batch()
    # Unit 0 has one view only; unit 3 has a left and a right view; units 1 and 2 are
    # marked unknown (-1) and same-sided: none of these but unit 3 may change.
    batch["mammo_side"] = torch.tensor([[0, -1], [-1, -1], [-1, -1], [0, 1]])
    with torch.no_grad():
        plain = model({k: v for k, v in batch.items() if k != "mammo_side"})
        sided = model(batch)
        same_side = model({**batch, "mammo_side": torch.tensor([[0, -1], [0, 0], [-1, -1],
                                                                [1, 1]])})
    changed = ~torch.isclose(plain["mammo_feat"], sided["mammo_feat"]).all(dim=1)
    assert changed.tolist() == [False, False, False, True]
    torch.testing.assert_close(plain["mammo_feat"], same_side["mammo_feat"])
    assert all(torch.isfinite(v).all() for v in sided.values())


def test_bilateral_asymmetry_ignores_view_order_and_reaches_its_parameters() -> None:
    model = _bilateral_model()
    batch = random_batch()
    batch["mammo_side"] = torch.tensor([[0, -1], [0, 1], [-1, -1], [0, 1]])
    swapped = {**batch, "mammo": batch["mammo"].flip(1), "mammo_side": batch["mammo_side"].flip(1),
               "mammo_mask": batch["mammo_mask"].flip(1)}
    rows = [1, 3]  # the units with both views present in both orders
    with torch.no_grad():
        a, b = model(batch)["mammo_feat"][rows], model(swapped)["mammo_feat"][rows]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    model.train()
    model(batch)["mammo_logit"].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.asymmetry.parameters())


def _dropout_models(p: float) -> tuple[CrossModalModel, CrossModalModel]:
    """The same weights with ``fused_modality_dropout`` 0 and ``p``."""
    plain = _model()
    dropping = CrossModalModel(plain.config.model_copy(update={"fused_modality_dropout": p}))
    dropping.load_state_dict(plain.state_dict())
    return plain, dropping


def test_fused_modality_dropout_is_identity_at_evaluation() -> None:
    plain, dropping = _dropout_models(0.9)
    batch = random_batch()
    expected, got = plain.eval()(batch), dropping.eval()(batch)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_fused_modality_dropout_fuses_one_modality_of_a_share_of_the_paired_units() -> None:
    plain, dropping = _dropout_models(0.5)
    batch = random_batch(units=160, views=1, tiles=1)  # units 3 onwards have both
    torch.manual_seed(1)
    out = dropping.train()(batch)
    reference = plain.train()(batch)
    # Each modality's own outputs are untouched; so are units with one modality.
    for key in ("mammo_logit", "histo_logit", "mammo_proj", "histo_proj"):
        torch.testing.assert_close(out[key], reference[key], rtol=0, atol=0)
    torch.testing.assert_close(out["fused_feat"][1:3], reference["fused_feat"][1:3])
    fused, mammo, histo = out["fused_feat"][3:], out["mammo_feat"][3:], out["histo_feat"][3:]
    kept = torch.isclose(fused, (mammo + histo) / 2).all(dim=1)
    only_mammo = torch.isclose(fused, mammo).all(dim=1)
    only_histo = torch.isclose(fused, histo).all(dim=1)
    assert bool((kept.int() + only_mammo.int() + only_histo.int() == 1).all())
    # 157 units, each left with one modality with odds 0.5: 4 sd is 0.16 of the share.
    assert abs(float((~kept).float().mean()) - 0.5) < 0.16
    assert int(only_mammo.sum()) > 20 and int(only_histo.sum()) > 20
    assert not torch.allclose(out["fused_logit"], reference["fused_logit"])


def test_fused_modality_dropout_must_be_a_share_below_one() -> None:
    for bad in (-0.1, 1.0):
        with pytest.raises(pydantic.ValidationError, match="fused_modality_dropout"):
            ModelConfig(fused_modality_dropout=bad)


def test_rows_of_the_batch_select_the_images_the_masks_select() -> None:
    batch = random_batch()  # unit 0: view 0 and tiles 0-1; unit 1: no tiles; unit 2: no views
    assert valid_rows(batch, "mammo").tolist() == [0, 2, 3, 6, 7]
    assert valid_rows(batch, "histo").tolist() == [0, 1, 6, 8, 9, 10, 11]
    model = _model().eval()
    given = {**batch, **{f"{m}_rows": valid_rows(batch, m) for m in ("mammo", "histo")}}
    with torch.no_grad():
        expected, out = model(batch), model(given)
    for key in ("mammo_logit", "histo_logit", "fused_logit", "token_scores"):
        assert torch.equal(out[key], expected[key]), key
    # The rows are what the model selects by: other rows, other features.
    swapped = {**given, "histo_rows": torch.tensor([0, 2, 6, 8, 9, 10, 11])}
    with torch.no_grad():
        assert not torch.equal(model(swapped)["histo_feat"][0], expected["histo_feat"][0])


def test_a_complete_batch_skips_the_copies_with_the_same_numbers(monkeypatch) -> None:
    """Every slot an image: the reshaped path gives the scattering path's outputs and
    gradients to the last bit (the speed-up must not change a trained model)."""
    batch = random_batch(units=2)  # fewer than 3 units: every view and tile present
    assert len(valid_rows(batch, "mammo")) == 2 * V and len(valid_rows(batch, "histo")) == 2 * T

    def outputs_and_grads() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        model = _model().train()
        out = model(batch)
        sum(v.float().sum() for v in out.values() if v.requires_grad).backward()
        return ({k: v.detach() for k, v in out.items()},
                {n: p.grad for n, p in model.named_parameters() if p.grad is not None})

    fast_out, fast_grads = outputs_and_grads()
    original = CrossModalModel._select

    def scattering(self, batch, modality):
        selection = original(self, batch, modality)
        assert selection.complete
        selection.images, selection.complete = selection.images.clone(), False
        return selection

    monkeypatch.setattr(CrossModalModel, "_select", scattering)
    slow_out, slow_grads = outputs_and_grads()
    assert fast_out.keys() == slow_out.keys() and fast_grads.keys() == slow_grads.keys()
    for key in fast_out:
        assert torch.equal(fast_out[key], slow_out[key]), key
    for name in fast_grads:
        assert torch.equal(fast_grads[name], slow_grads[name]), name
