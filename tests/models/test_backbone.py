from __future__ import annotations

from copy import deepcopy

import pydantic
import pytest
import torch
from torch._dynamo.utils import counters

from radpath.augment.mixstyle import TokenMixStyle
from radpath.errors import RadpathError
from radpath.models.adapters import BottleneckAdapter, LoRALinear
from radpath.models.backbone import BACKBONES, BackboneConfig, SharedBackbone
from tests.models import CountingMixStyle


def _backbone(**overrides: object) -> SharedBackbone:
    torch.manual_seed(0)
    return SharedBackbone(BackboneConfig(img_size=32, histo_img_size=32, **overrides))


def test_registry_holds_the_vit_shapes() -> None:
    shapes = {"vit_test", "vit_micro", "vit_mini", "vit_tiny", "vit_small", "vit_base"}
    assert shapes <= set(BACKBONES)
    base = BACKBONES.get("vit_base")()
    assert (base["embed_dim"], base["depth"], base["num_heads"], base["patch_size"]) == (
        768, 12, 12, 16)


@pytest.mark.parametrize("bad", [{"name": "vit_huge_typo"}, {"mixstyle_layers": (2,)},
                                 {"adapter": "prefix"}, {"unknown_field": 1}])
def test_config_rejects_invalid_values(bad: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        BackboneConfig(**bad)


def test_tokens_per_modality_and_cls_embedding() -> None:
    backbone = _backbone()
    mammo = backbone.forward_tokens(torch.randn(2, 1, 32, 32), "mammo")
    histo = backbone.forward_tokens(torch.randn(3, 3, 32, 32), "histo")
    assert mammo.shape == (2, 1 + 16, 64) and histo.shape == (3, 1 + 16, 64)
    cls = backbone(torch.randn(2, 1, 32, 32), "mammo")
    assert cls.shape == (2, backbone.embed_dim)


def test_wrong_channels_or_modality_raise_value_error() -> None:
    backbone = _backbone()
    with pytest.raises(ValueError, match="mammo images"):
        backbone.forward_tokens(torch.randn(1, 3, 32, 32), "mammo")
    with pytest.raises(ValueError, match="modality"):
        backbone.forward_tokens(torch.randn(1, 3, 32, 32), "mri")


def test_other_image_sizes_resample_the_position_embedding() -> None:
    backbone = _backbone()
    tokens = backbone.forward_tokens(torch.randn(1, 1, 48, 64), "mammo")
    assert tokens.shape == (1, 1 + 6 * 8, 64)
    assert backbone.grid_size("mammo", (48, 64)) == (6, 8)


def test_unshared_backbone_has_one_encoder_per_modality() -> None:
    backbone = _backbone(shared=False)
    assert set(backbone.encoders) == {"mammo", "histo"}
    assert backbone.trunk("mammo") is not backbone.trunk("histo")
    assert backbone.forward_tokens(torch.randn(1, 3, 32, 32), "histo").shape == (1, 17, 64)
    assert backbone.forward_tokens(torch.randn(1, 1, 32, 32), "mammo").shape == (1, 17, 64)


def test_set_fused_attn_toggles_and_restores() -> None:
    backbone = _backbone()
    attns = [block.attn for block in backbone.trunk("mammo").blocks]
    for attn in attns:
        attn.fused_attn = True
    x = torch.randn(2, 1, 32, 32)
    fused = backbone(x, "mammo")
    with pytest.raises(KeyError), backbone.set_fused_attn(False):
        assert not any(attn.fused_attn for attn in attns)
        torch.testing.assert_close(backbone(x, "mammo"), fused, atol=1e-5, rtol=1e-5)
        raise KeyError("restored even when the body fails")
    assert all(attn.fused_attn for attn in attns)


def test_bottleneck_adapter_starts_as_identity() -> None:
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(BottleneckAdapter(16, 4)(x), x)


def test_lora_starts_as_identity_and_needs_a_modality() -> None:
    base = torch.nn.Linear(16, 48)
    lora = LoRALinear(base, ("mammo", "histo"), rank=4)
    x = torch.randn(3, 16)
    with pytest.raises(RadpathError, match="modality"):
        lora(x)
    lora.modality = "histo"
    torch.testing.assert_close(lora(x), base(x))


@pytest.mark.parametrize("adapter", ["bottleneck", "lora"])
def test_adapters_do_not_change_the_initial_output(adapter: str) -> None:
    plain, adapted = _backbone(adapter="none"), _backbone(adapter=adapter)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(adapted(x, "histo"), plain(x, "histo"))


@pytest.mark.parametrize("adapter", ["bottleneck", "lora"])
def test_histo_forward_gives_no_gradient_to_mammo_adapter(adapter: str) -> None:
    backbone = _backbone(adapter=adapter)
    # A random readout: the plain sum of LayerNorm outputs has zero gradient.
    (backbone(torch.randn(2, 3, 32, 32), "histo") @ torch.randn(64)).sum().backward()
    named = dict(backbone.named_parameters())
    mammo = [p for n, p in named.items() if "mammo" in n and ("adapters" in n or "lora" in n)]
    histo = [p for n, p in named.items() if "histo" in n and ("adapters" in n or "lora" in n)]
    assert mammo and all(p.grad is None for p in mammo)
    # The zero-initialised output side (up-projection, LoRA B) is what learns first.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in histo)


def test_mixstyle_is_called_after_each_configured_block() -> None:
    backbone = _backbone(mixstyle_layers=(0, 1))
    mixstyle = CountingMixStyle()
    domains = torch.tensor([0, 1, 1])
    backbone.forward_tokens(torch.randn(3, 1, 32, 32), "mammo", domains=domains,
                            mixstyle=mixstyle)
    assert len(mixstyle.calls) == 2
    assert all(shape == (3, 17, 64) and d is domains for shape, d in mixstyle.calls)


def test_compiled_tokens_and_gradients_match_eager_and_copies_stay_apart() -> None:
    torch.manual_seed(0)
    backbone = SharedBackbone(BackboneConfig(img_size=16, histo_img_size=16))
    x = torch.randn(3, 3, 16, 16, requires_grad=True)
    eager = backbone.forward_tokens(x, "histo")
    (eager_grad,) = torch.autograd.grad(eager.sum(), x)
    backbone.use_compiled()
    captured = counters["stats"]["calls_captured"]
    compiled = backbone.forward_tokens(x, "histo")
    assert counters["stats"]["calls_captured"] > captured  # dynamo did trace the body
    (compiled_grad,) = torch.autograd.grad(compiled.sum(), x)
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-4, rtol=1e-4)
    # The compiled body is a free function: a copy (an EMA, a test-time adaptation method) runs its
    # own weights, not those of the backbone it was copied from.
    copy = deepcopy(backbone)
    with torch.no_grad():
        copy.encoders["shared"].norm.bias.add_(1.0)
        moved = copy.forward_tokens(x, "histo")
        torch.testing.assert_close(moved, eager.detach() + 1.0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(backbone.forward_tokens(x, "histo"), eager.detach(),
                                   atol=1e-5, rtol=1e-5)


def _randomise_adapters(backbone: SharedBackbone) -> None:
    # Fresh adapters are the identity (zero up-projection): give each modality its own.
    with torch.no_grad():
        for parameter in backbone.adapter_parameters():
            parameter.normal_(0.0, 0.2)


def _count_block_rows(backbone: SharedBackbone) -> list[int]:
    rows: list[int] = []
    for vit in backbone.encoders.values():
        vit.blocks[0].register_forward_hook(lambda _m, args, _o: rows.append(len(args[0])))
    return rows


def test_one_pass_over_both_modalities_matches_a_pass_each() -> None:
    # One MixStyle block, so both orders draw its mixing for mammograms first.
    backbone = _backbone(mixstyle_layers=(1,))
    _randomise_adapters(backbone)
    images = {"mammo": torch.randn(2, 1, 32, 32, requires_grad=True),
              "histo": torch.randn(3, 3, 32, 32, requires_grad=True)}
    domains = {"mammo": torch.tensor([0, 1]), "histo": torch.tensor([1, 0, 1])}
    readout = torch.randn(64)
    results = []
    for one_pass in (True, False):
        rows = _count_block_rows(backbone)
        mixstyle = TokenMixStyle(p=1.0, alpha=0.3, mix="crossdomain", seed=0)
        if one_pass:
            tokens = backbone.forward_tokens_many(images, domains=domains, mixstyle=mixstyle)
        else:  # each modality through every block before the next, as before
            tokens = {m: backbone.forward_tokens(x, m, domains=domains[m], mixstyle=mixstyle)
                      for m, x in images.items()}
        assert rows == ([5] if one_pass else [2, 3])
        loss = sum(((t @ readout) ** 2).mean() for t in tokens.values())
        grads = torch.autograd.grad(loss, [*images.values(),
                                           *backbone.adapter_parameters()])
        results.append((tokens, grads))
        for vit in backbone.encoders.values():
            vit.blocks[0]._forward_hooks.clear()
    (joint, joint_grads), (apart, apart_grads) = results
    for modality in images:
        torch.testing.assert_close(joint[modality], apart[modality], atol=1e-5, rtol=1e-5)
    for a, b in zip(joint_grads, apart_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("overrides", "histo_side"), [({}, 16), ({"adapter": "lora"}, 32),
                                                       ({"shared": False}, 32)])
def test_one_pass_falls_back_to_a_pass_each(overrides: dict, histo_side: int) -> None:
    backbone = _backbone(**overrides)
    _randomise_adapters(backbone)
    images = {"mammo": torch.randn(2, 1, 32, 32),
              "histo": torch.randn(3, 3, histo_side, histo_side)}
    rows = _count_block_rows(backbone)
    tokens = backbone.forward_tokens_many(images)
    assert sorted(rows) == [2, 3]
    for modality, x in images.items():
        torch.testing.assert_close(tokens[modality], backbone.forward_tokens(x, modality))


def test_one_pass_checks_each_modality_s_images() -> None:
    with pytest.raises(ValueError, match="histo images must be"):
        _backbone().forward_tokens_many({"mammo": torch.randn(1, 1, 32, 32),
                                         "histo": torch.randn(1, 1, 32, 32)})


def test_compiled_one_pass_matches_eager() -> None:
    torch.manual_seed(0)
    backbone = SharedBackbone(BackboneConfig(img_size=16, histo_img_size=16))
    _randomise_adapters(backbone)
    images = {"mammo": torch.randn(2, 1, 16, 16), "histo": torch.randn(3, 3, 16, 16)}
    eager = backbone.forward_tokens_many(images)
    backbone.use_compiled()
    captured = counters["stats"]["calls_captured"]
    compiled = backbone.forward_tokens_many(images)
    assert counters["stats"]["calls_captured"] > captured
    for modality in images:
        torch.testing.assert_close(compiled[modality], eager[modality], atol=1e-5, rtol=1e-5)
