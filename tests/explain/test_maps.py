"""Saliency maps: each kind non-trivial, fused attention restored, geometry round trips."""

import numpy as np
import pytest
import torch

from radpath.data.mammo import MammoConfig, MammoPreprocessor
from radpath.explain.faithfulness import single_view_batch
from radpath.explain.maps import (
    MAP_KINDS,
    AttentionRecorder,
    compute_maps,
    explaining,
    map_to_original,
    map_to_output,
)
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig


def _blob_image(size: int = 32, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.exp(-((xx - 10) ** 2 + (yy - 20) ** 2) / 20.0) + 0.1 * rng.random((size, size))
    return torch.from_numpy(((image - 0.5) / 0.25).astype(np.float32))[None]


def _two_view_batch() -> dict[str, torch.Tensor]:
    views = torch.stack([_blob_image(seed=0), _blob_image(seed=1).flip(-1)])
    batch = single_view_batch(views[:1])
    batch["mammo"] = views[None]
    batch["mammo_mask"] = torch.ones(1, 2, dtype=torch.bool)
    return batch


def _fused_flags(model):
    return [blk.attn.fused_attn for vit in model.backbone.encoders.values() for blk in vit.blocks]


@pytest.mark.parametrize("kind", MAP_KINDS)
def test_each_map_kind_is_finite_and_not_empty(tiny_model, kind):
    maps = compute_maps(tiny_model, _two_view_batch(), [kind])[kind]
    assert maps.shape == (2, 4, 4) and np.isfinite(maps).all()
    assert maps.max() > 0
    if kind == "mil":  # constant within a view, valued at the view's attention weight
        assert np.ptp(maps[0]) == 0 and np.isclose(maps[:, 0, 0].sum(), 1.0, atol=1e-5)
    else:
        assert np.ptp(maps[0]) > 0, f"{kind} map is uniform"


@pytest.mark.parametrize("kind", MAP_KINDS)
def test_windowed_model_maps_cover_the_view_grid(kind):
    torch.manual_seed(0)
    model = CrossModalModel(ModelConfig(
        backbone=BackboneConfig(name="vit_test", img_size=16, histo_img_size=32),
        projection_dim=16, mil_hidden=16, mammo_window=16)).eval()
    maps = compute_maps(model, _two_view_batch(), [kind])[kind]
    assert maps.shape == (2, 4, 4) and np.isfinite(maps).all() and maps.max() > 0
    if kind == "mil":  # constant within each window, the windows' weights sum to 1
        assert np.ptp(maps[0, :2, :2]) == 0 and np.ptp(maps[0]) > 0
        assert np.isclose(maps[:, ::2, ::2].sum(), 1.0, atol=1e-5)
    else:
        assert np.ptp(maps[0]) > 0, f"{kind} map is uniform"


def test_rollout_rows_are_distributions(tiny_model):
    images = _blob_image()[None]
    with explaining(tiny_model), AttentionRecorder(tiny_model) as recorder, torch.no_grad():
        tiny_model.encode_images(images, "mammo")
    assert len(recorder.matrices) == tiny_model.backbone.depth
    maps = compute_maps(tiny_model, single_view_batch(images), ["rollout"])["rollout"]
    assert 0 < maps.sum() <= 1.0 + 1e-5  # CLS row over patches: part of a distribution


def test_fused_attention_restored_after_explaining_and_after_an_error(tiny_model):
    for blk in tiny_model.backbone.trunk("mammo").blocks:
        blk.attn.fused_attn = True
    tiny_model.train()
    compute_maps(tiny_model, _two_view_batch())
    assert all(_fused_flags(tiny_model)) and tiny_model.training
    with pytest.raises(RuntimeError, match="boom"), explaining(tiny_model):
        assert not any(_fused_flags(tiny_model))
        raise RuntimeError("boom")
    assert all(_fused_flags(tiny_model)) and tiny_model.training


def test_no_hook_is_left_behind(tiny_model):
    compute_maps(tiny_model, _two_view_batch())
    for blk in tiny_model.backbone.trunk("mammo").blocks:
        assert not blk.attn.attn_drop._forward_hooks and not blk._forward_hooks


def _geometry(laterality: str):
    rng = np.random.default_rng(0)
    image = np.zeros((300, 200), np.float32)
    yy, xx = np.mgrid[:300, :200]
    breast = (xx - 200) ** 2 / 150**2 + (yy - 150) ** 2 / 120**2 <= 1  # chest wall right
    image[breast] = 0.6 + 0.2 * rng.random(breast.sum())
    return MammoPreprocessor(MammoConfig(size=64)).transform(image, laterality=laterality)


@pytest.mark.parametrize("laterality", ["R", "L"])
def test_point_to_original_and_back_lands_where_it_started(laterality):
    geometry = _geometry(laterality).geometry
    points = np.array([[5.5, 7.25], [40.0, 33.0], [63.0, 1.0]])
    np.testing.assert_allclose(geometry.to_output(geometry.to_original(points)), points,
                               atol=1e-9)


@pytest.mark.parametrize("laterality", ["R", "L"])
def test_map_peak_maps_back_into_its_grid_cell(laterality):
    result = _geometry(laterality)
    geometry = result.geometry
    assert geometry.flipped == (laterality == "R")
    grid = np.zeros((8, 8), np.float32)
    grid[4, 2] = 1.0  # a cell inside the content
    original = map_to_original(grid, geometry)
    assert original.shape == geometry.original_shape
    y, x = np.unravel_index(np.argmax(original), original.shape)
    back = geometry.to_output(np.array([x + 0.5, y + 0.5]))
    assert int(back[1] // 8) == 4 and int(back[0] // 8) == 2
    y0, x0, y1, x1 = geometry.crop_box
    outside = np.ones(original.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert (original[outside] == 0).all()


def test_display_scale_and_output_resampling():
    geometry = _geometry("R").geometry
    grid = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    small = map_to_original(grid, geometry, display_scale=0.5)
    assert small.shape == (150, 100)
    delta = np.zeros((8, 8), np.float32)
    delta[2, 5] = 1.0
    full = map_to_output(delta, 64)
    y, x = np.unravel_index(np.argmax(full), full.shape)
    assert full.shape == (64, 64) and (y // 8, x // 8) == (2, 5)
