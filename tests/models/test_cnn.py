"""The CNN backbone and CNN stem: input conversion, tokens, BatchNorm, layer depths."""

from __future__ import annotations

import pydantic
import pytest
import torch

from radpath.engine.finetune import layer_scales, scale_by_layer
from radpath.models.backbone import BackboneConfig, build_backbone
from radpath.models.cnn import PIPELINE_NORM, CnnBackbone, PretrainedInput
from radpath.models.crossmodal import CrossModalModel, ModelConfig


def _cnn(**overrides: object) -> CnnBackbone:
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(name="efficientnet_lite0", **overrides))


def test_inputs_reach_the_pretrained_range_with_grey_as_three_channels() -> None:
    # EfficientNet-Lite's TensorFlow weights expect x / 127.5 - 1: black -1, white +1.
    histo = PretrainedInput("histo", (0.5,) * 3, (0.5,) * 3)
    mean, std = (torch.tensor(v)[:, None, None] for v in PIPELINE_NORM["histo"])
    rgb = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
    torch.testing.assert_close(histo((rgb - mean) / std), rgb * 2 - 1)
    mammo = PretrainedInput("mammo", (0.5,) * 3, (0.5,) * 3)
    grey = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 1, 1, 3)
    out = mammo((grey - 0.5) / 0.25)
    assert out.shape == (1, 3, 1, 3)
    torch.testing.assert_close(out, (grey * 2 - 1).expand(1, 3, 1, 3))


def test_a_grey_film_reads_as_the_same_grey_photograph() -> None:
    backbone = _cnn(adapter="none").eval()
    grey = torch.rand(2, 1, 64, 64)
    mean, std = (torch.tensor(v)[:, None, None] for v in PIPELINE_NORM["histo"])
    as_photo = (grey.expand(-1, 3, -1, -1) - mean) / std
    torch.testing.assert_close(backbone.forward_tokens((grey - 0.5) / 0.25, "mammo"),
                               backbone.forward_tokens(as_photo, "histo"), atol=1e-4,
                               rtol=1e-4)


def test_tokens_grid_and_cls_is_their_mean() -> None:
    backbone = _cnn(shared=False)
    tokens = backbone.forward_tokens(torch.randn(2, 3, 96, 64), "histo")
    assert tokens.shape == (2, 1 + 3 * 2, 1280) and backbone.grid_size("histo", (96, 64)) == (3, 2)
    torch.testing.assert_close(tokens[:, 0], tokens[:, 1:].mean(dim=1))
    assert backbone.trunk("mammo") is not backbone.trunk("histo")
    with pytest.raises(ValueError, match=r"mammo images must be \(B, 1, H, W\)"):
        backbone.forward_tokens(torch.randn(2, 3, 64, 64), "mammo")


@pytest.mark.parametrize(("norm", "moves"), [("frozen", False), ("batch", True)])
def test_batchnorm_statistics_frozen_or_updated(norm: str, moves: bool) -> None:
    backbone = _cnn(norm=norm).train()
    before = {k: v.clone() for k, v in backbone.state_dict().items() if "running_mean" in k}
    backbone.forward_tokens(torch.randn(4, 3, 64, 64) * 3 + 1, "histo").sum().backward()
    after = backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before) is moves
    # Frozen: the affine parameters are buffers, not parameters the optimiser could move.
    stem_bn = dict(backbone.trunks["shared"].bn1.named_parameters())
    assert (not stem_bn) is (not moves)


def test_the_model_runs_mil_and_heads_on_cnn_windows() -> None:
    torch.manual_seed(0)
    model = CrossModalModel(ModelConfig(backbone=BackboneConfig(
        name="efficientnet_lite0", shared=False, img_size=64), mammo_window=64,
        histo_score="tile_mean", mammo_score="window_max")).eval()
    batch = {"mammo": torch.randn(2, 2, 1, 128, 128), "mammo_mask": torch.ones(2, 2),
             "has_mammo": torch.ones(2), "histo": torch.randn(2, 3, 3, 64, 64),
             "histo_mask": torch.tensor([[1, 1, 0], [1, 0, 0]]), "has_histo": torch.ones(2)}
    out = model(batch)
    assert out["token_scores"].shape == (2, 2, 4, 4)  # 2x2 windows of 2x2 tokens a view
    assert out["histo_logit"].shape == (2,) and torch.isfinite(out["fused_logit"]).all()
    # window_max: the film is as suspicious as its most suspicious window.
    windows, keep, _ = model.mammo_windows(batch["mammo"].reshape(4, 1, 128, 128))
    assert keep.all()
    window_logit = model.heads["mammo"](model.encode_images(windows, "mammo")[0])
    torch.testing.assert_close(out["mammo_logit"], window_logit.reshape(2, 8).amax(dim=1))


def test_layer_decay_scales_each_stage_and_spares_the_adapters() -> None:
    backbone = _cnn(norm="batch")
    names = dict(backbone.named_parameters())
    assert backbone.layer_id("trunks.shared.conv_stem.weight") == 0
    assert backbone.layer_id("trunks.shared.blocks.3.1.conv_pw.weight") == 4
    assert backbone.layer_id("trunks.shared.conv_head.weight") == backbone.num_layers == 8
    assert backbone.layer_id("adapters.histo.0.down.weight") is None
    scales = layer_scales(backbone, 0.5)
    assert scales[id(names["trunks.shared.conv_stem.weight"])] == 0.5 ** 8
    assert scales[id(names["trunks.shared.conv_head.weight"])] == 1.0
    optimizer = torch.optim.AdamW([{"params": list(names.values()), "lr": 1e-3}])
    scale_by_layer(optimizer, scales)
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert rates[id(names["trunks.shared.blocks.3.1.conv_pw.weight"])] == pytest.approx(
        1e-3 * 0.5 ** 4)
    assert rates[id(names["adapters.histo.0.down.weight"])] == 1e-3
    assert len(rates) == len(names)


def test_vit_layer_ids_count_blocks_after_the_embedding() -> None:
    vit = build_backbone(BackboneConfig(img_size=32, histo_img_size=32))
    assert vit.layer_id("encoders.shared.pos_embed") == 0
    assert vit.layer_id("patch_embed.mammo.proj.weight") == 0
    assert vit.layer_id("encoders.shared.blocks.1.attn.qkv.weight") == 2
    assert vit.layer_id("encoders.shared.norm.weight") == vit.num_layers == 3
    assert vit.layer_id("adapters.mammo.0.down.weight") is None


@pytest.mark.parametrize("bad", [{"adapter": "lora"}, {"stem": "hmlp"}])
def test_cnn_config_refuses_vit_only_settings(bad: dict) -> None:
    with pytest.raises(pydantic.ValidationError, match="is a CNN"):
        BackboneConfig(name="efficientnet_lite0", **bad)


def test_attention_maps_are_refused_for_a_cnn_with_the_kinds_that_work() -> None:
    from radpath.explain.maps import compute_maps

    model = CrossModalModel(ModelConfig(backbone=BackboneConfig(name="efficientnet_lite0")))
    batch = {"mammo": torch.zeros(1, 1, 1, 64, 64), "mammo_mask": torch.ones(1, 1)}
    with pytest.raises(ValueError, match=r"need a ViT backbone.*use localisation or mil"):
        compute_maps(model, batch, ["rollout"], out={})
