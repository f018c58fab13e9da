"""Windowed mammogram encoding (``model.mammo_window``): cutting, stitching, skipping."""

from __future__ import annotations

import pytest
import torch

from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import BACKGROUND_SCORE, CrossModalModel, ModelConfig
from tests.models import random_batch

WINDOW = 32


def _windowed(**extra: object) -> CrossModalModel:
    torch.manual_seed(0)
    config = ModelConfig(backbone=BackboneConfig(img_size=WINDOW, histo_img_size=32),
                         mammo_window=WINDOW, **extra)
    return CrossModalModel(config).eval()


def _half_background(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mammograms at 64 px whose left half is flat background (-2) and right half breast."""
    views = batch["mammo"]
    breast = views.abs() + 0.5
    breast[..., :, :WINDOW] = -2.0
    batch["mammo"] = breast * batch["mammo_mask"][..., None, None, None] - 2.0 * (
        ~batch["mammo_mask"][..., None, None, None])
    return batch


def test_windows_cut_and_stitch_back_to_the_view() -> None:
    model = _windowed()
    views = torch.randn(3, 1, 64, 96)
    windows, keep, layout = model.mammo_windows(views)
    assert windows.shape == (3 * 2 * 3, 1, WINDOW, WINDOW) and layout == (2, 3)
    assert bool(keep.all())
    torch.testing.assert_close(windows[4, 0], views[0, 0, 32:64, 32:64])
    torch.testing.assert_close(model.stitch(windows[:, 0], layout), views[:, 0])


def test_background_windows_are_skipped_but_every_view_keeps_one() -> None:
    model = _windowed()
    views = torch.full((2, 1, 64, 64), -2.0)
    views[0, :, :, 32:] = 1.0  # right half of view 0 is breast; view 1 is all background
    _, keep, _ = model.mammo_windows(views)
    assert keep.reshape(2, 4).tolist() == [[False, True, False, True],
                                          [True, False, False, False]]


def test_windowed_outputs_follow_the_view_grid() -> None:
    batch = _half_background(random_batch(size=64))
    out = _windowed()(batch)
    assert out["token_scores"].shape == (4, 2, 8, 8)
    assert out["mammo_window_attention"].shape == (4, 2, 4)
    # Background windows (the left column) get no attention and the background score.
    assert torch.all(out["mammo_window_attention"][..., 0::2] == 0)
    present = batch["mammo_mask"]
    assert torch.all(out["token_scores"][present][..., :, :4] == BACKGROUND_SCORE)
    assert torch.all(out["token_scores"][~present] == 0)
    torch.testing.assert_close(out["mammo_attention"].sum(1), batch["has_mammo"].float())
    torch.testing.assert_close(out["mammo_attention"],
                               out["mammo_window_attention"].sum(dim=-1))


def test_a_window_is_encoded_as_the_same_crop_alone() -> None:
    model = _windowed()
    batch = _half_background(random_batch(size=64))
    out = model(batch)
    crop = batch["mammo"][3, 1, :, 32:64, 32:64][None]
    with torch.no_grad():
        _, patches = model.encode_images(crop, "mammo")
        alone = model.localisation(patches).reshape(4, 4)
    torch.testing.assert_close(out["token_scores"][3, 1, 4:, 4:], alone)


def test_bilateral_and_mixstyle_work_with_windows() -> None:
    model = _windowed(bilateral=True).train()
    batch = _half_background(random_batch(size=64))
    batch["mammo_side"] = torch.tensor([[0, -1], [0, 1], [-1, -1], [1, 0]])
    out = model(batch)
    out["mammo_logit"].sum().backward()
    assert model.asymmetry[1].weight.grad is not None
    assert model.asymmetry[1].weight.grad.abs().sum() > 0


def test_a_window_that_does_not_divide_the_view_is_refused() -> None:
    model = _windowed()
    with pytest.raises(ValueError, match="mammo_window"):
        model.mammo_windows(torch.zeros(1, 1, 48, 64))


def test_view_tokens_are_the_window_tokens_in_place() -> None:
    model = _windowed()
    views = _half_background(random_batch(size=64))["mammo"][3]  # both views present
    with torch.no_grad():
        tokens = model.view_tokens(views)  # (2, 8 * 8, D)
        _, alone = model.encode_images(views[1:, :, 32:64, 32:64], "mammo")
    grid = tokens.reshape(2, 8, 8, -1)
    torch.testing.assert_close(grid[1, 4:, 4:].reshape(16, -1), alone[0])
    assert torch.all(grid[:, :, :4] == 0)  # the background column of windows


def test_a_windowed_view_is_scored_by_the_mean_of_its_breast_windows() -> None:
    model = _windowed()
    batch = _half_background(random_batch(size=64))
    out = model(batch)
    windows, keep, _ = model.mammo_windows(batch["mammo"][3, 1][None])
    assert keep.tolist() == [False, True, False, True]
    with torch.no_grad():
        cls, _ = model.encode_images(windows[keep], "mammo")
        alone = model.heads["mammo"](cls.mean(dim=0, keepdim=True))[0]
    torch.testing.assert_close(out["mammo_view_logit"][3, 1], alone)
