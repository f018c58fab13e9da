"""The hmlp stem: a nonlinear patch embedding whose tokens each see their own patch only."""

from __future__ import annotations

import pytest
import torch

from radpath.models.backbone import BackboneConfig, SharedBackbone
from radpath.models.crossmodal import CrossModalModel, ModelConfig
from radpath.models.stems import hmlp_strides, patch_embedding
from tests.models import random_batch


@pytest.mark.parametrize(("patch", "strides"), [(16, [4, 2, 2]), (8, [4, 2]), (4, [4]),
                                                (2, [2]), (32, [4, 2, 2, 2])])
def test_stages_multiply_to_the_patch(patch: int, strides: list[int]) -> None:
    assert hmlp_strides(patch) == strides


@pytest.mark.parametrize("patch", [12, 1, 0])
def test_patches_that_are_no_power_of_two_are_refused(patch: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        hmlp_strides(patch)


def test_each_token_depends_on_its_own_patch_only() -> None:
    torch.manual_seed(0)
    embed = patch_embedding(img_size=32, patch_size=8, in_chans=3, embed_dim=32, stem="hmlp")
    x = torch.randn(1, 3, 32, 32)
    changed = x.clone()
    changed[..., 8:16, 16:24] += torch.randn(3, 8, 8)  # the patch at row 1, column 2
    before, after = embed(x), embed(changed)
    assert before.shape == (1, 4, 4, 32)
    moved = (before - after).abs().amax(dim=-1)[0]
    assert moved[1, 2] > 0
    moved[1, 2] = 0
    assert torch.equal(moved, torch.zeros(4, 4))
    # A 3x3 convolution would have let the neighbours see it: masking would leak.


def test_same_grid_as_the_linear_embedding_and_gradients_reach_the_stem() -> None:
    torch.manual_seed(0)
    backbone = BackboneConfig(img_size=32, histo_img_size=32, stem="hmlp")
    model = CrossModalModel(ModelConfig(backbone=backbone, projection_dim=16, num_grades=3))
    linear = SharedBackbone(BackboneConfig(img_size=32, histo_img_size=32))
    assert model.backbone.grid_size("mammo", (48, 32)) == linear.grid_size("mammo", (48, 32))
    out = model(random_batch())
    (out["fused_logit"].sum() + out["token_scores"].sum()).backward()
    for modality in ("mammo", "histo"):
        first = model.backbone.patch_embed[modality].proj[0]
        assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0


def test_unknown_stem_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stem"):
        patch_embedding(img_size=32, patch_size=8, in_chans=1, embed_dim=32, stem="conv")
    with pytest.raises(ValueError, match="stem"):
        BackboneConfig(stem="conv")
