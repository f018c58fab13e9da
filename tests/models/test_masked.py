"""Masked image modelling: masks, targets, and that masked pixels stay hidden."""

import pytest
import torch

from radpath.models.backbone import NUM_PREFIX_TOKENS
from radpath.models.crossmodal import CrossModalModel, ModelConfig
from radpath.models.masked import MaskedImageModel, batch_images, patch_pixels


def _model(**config) -> CrossModalModel:
    torch.manual_seed(0)
    return CrossModalModel(ModelConfig(backbone={"name": "vit_test"}, **config))


def _batch(units=2, views=2, tiles=3, side=64):
    return {"mammo": torch.randn(units, views, 1, side, side),
            "mammo_mask": torch.tensor([[True, False], [True, True]]),
            "has_mammo": torch.tensor([True, True]),
            "histo": torch.randn(units, tiles, 3, side, side),
            "histo_mask": torch.tensor([[True, True, False], [True, True, True]]),
            "has_histo": torch.tensor([True, False])}


def test_mask_covers_the_ratio_in_whole_blocks():
    masked = MaskedImageModel(_model(), mask_ratio=0.25, mask_block=2)
    mask = masked.draw_mask(5, (8, 8), torch.device("cpu"))
    assert mask.shape == (5, 8, 8)
    assert torch.equal(mask.sum(dim=(1, 2)), torch.full((5,), 16))  # 4 of 16 blocks of 4
    blocks = mask.reshape(5, 4, 2, 4, 2)
    assert torch.equal(blocks.all(dim=(2, 4)), blocks.any(dim=(2, 4)))  # never half a block


def test_patch_pixels_orders_each_patch_row_major_channels_last():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = patch_pixels(images, 2)
    assert patches.shape == (2, 2, 2, 12)
    # Patch (0, 1) of image 0: pixels (0, 2), (0, 3), (1, 2), (1, 3), each with its 3 channels.
    expected = torch.stack([images[0, :, r, c] for r in (0, 1) for c in (2, 3)]).reshape(-1)
    assert torch.equal(patches[0, 0, 1], expected)


def test_masked_pixels_cannot_reach_the_tokens():
    model = _model().eval()
    masked = MaskedImageModel(model, mask_ratio=0.5, mask_block=2)
    images = torch.randn(2, 3, 64, 64)
    mask = masked.draw_mask(2, (8, 8), torch.device("cpu"))
    changed = images.clone()
    pixel_mask = mask.repeat_interleave(8, 1).repeat_interleave(8, 2)[:, None].expand_as(images)
    changed[pixel_mask] = torch.randn(int(pixel_mask.sum()))
    masking = (mask, masked.mask_tokens["histo"])
    with torch.no_grad():
        before = model.backbone.forward_tokens(images, "histo", masking=masking)
        after = model.backbone.forward_tokens(changed, "histo", masking=masking)
        unmasked = model.backbone.forward_tokens(changed, "histo")
    torch.testing.assert_close(before, after)
    assert not torch.allclose(after, unmasked)


def test_batch_images_keep_present_tiles_and_breast_windows():
    batch = _batch()
    images = batch_images(_model(), batch)
    assert images["histo"].shape == (2, 3, 64, 64)  # unit 2 has no histology
    assert images["mammo"].shape == (3, 1, 64, 64)  # 3 views present
    windowed = batch_images(_model(mammo_window=32), batch)
    assert windowed["mammo"].shape[1:] == (1, 32, 32)
    assert 3 <= len(windowed["mammo"]) <= 12  # at most 4 windows a view, at least one


def test_loss_is_the_mean_absolute_error_of_the_masked_patches_pixels():
    masked = MaskedImageModel(_model().eval(), mask_ratio=0.25, mask_block=2)
    images = torch.randn(2, 3, 64, 64)
    mask = masked.draw_mask(2, (8, 8), torch.device("cpu"))
    mask[1] = False  # the second image gets fewer masked patches than the first
    mask[1, :2, :2] = True
    masked.draw_mask = lambda *args: mask
    with torch.no_grad():
        loss = masked.image_loss(images, "histo")
        tokens = masked.model.backbone.forward_tokens(
            images, "histo", masking=(mask, masked.mask_tokens["histo"]))
        predicted = masked.decoders["histo"](tokens[:, NUM_PREFIX_TOKENS:]).reshape(2, 8, 8, -1)
    target = patch_pixels(images, 8)
    expected = (predicted[mask] - target[mask]).abs().mean()  # 16 + 4 patches, each alike
    torch.testing.assert_close(loss, expected)


def test_reconstruction_loss_falls_when_trained():
    masked = MaskedImageModel(_model(), mask_ratio=0.5, mask_block=2)
    optimizer = torch.optim.AdamW(masked.trainable_parameters(), lr=3e-3)
    batch = _batch()
    torch.manual_seed(1)
    losses = []
    for _ in range(30):
        loss = masked(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5


def test_heads_are_not_trained():
    masked = MaskedImageModel(_model(), mask_ratio=0.5)
    trained = {id(p) for p in masked.trainable_parameters()}
    assert not any(id(p) in trained for p in masked.model.heads.parameters())
    assert all(id(p) in trained for p in masked.model.backbone.parameters())


@pytest.mark.parametrize("ratio", [0.0, 1.0])
def test_mask_ratio_must_leave_something_to_see_and_to_predict(ratio):
    with pytest.raises(ValueError, match="mask_ratio"):
        MaskedImageModel(_model(), mask_ratio=ratio)
