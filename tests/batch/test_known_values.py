"""Known values of the batch contract's numbers: normalisation constants, tile and mammogram
tensors, lesion maps, so that a move or a swap of any of them fails a test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radpath.adapt.interventions import InterventionConfig, intervene_histo, intervene_mammo
from radpath.batch.tensors import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAMMO_MEAN,
    MAMMO_STD,
    lesion_map,
    tile_tensor,
)
from radpath.explain.faithfulness import BLANK


def test_normalisation_constants_are_imagenet_and_the_mammogram_window():
    np.testing.assert_array_equal(IMAGENET_MEAN, np.float32([0.485, 0.456, 0.406]))
    np.testing.assert_array_equal(IMAGENET_STD, np.float32([0.229, 0.224, 0.225]))
    assert (MAMMO_MEAN, MAMMO_STD) == (0.5, 0.25)
    assert BLANK == -2.0  # the preprocessed background, 0, after (x - 0.5) / 0.25


def test_tile_tensor_known_values_and_channel_first_layout():
    tile = np.zeros((1, 2, 3, 3), dtype=np.uint8)
    tile[0, 0, 1] = (255, 0, 128)
    out = tile_tensor(tile)
    assert out.shape == (1, 3, 2, 3) and out.dtype == torch.float32
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[0, :, 0, 1].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 2].numpy(),
                               [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)


def test_interventions_read_the_tensors_back_through_the_same_constants():
    # At strength zero an intervention de-normalises, clamps to [0, 1] and re-normalises.
    # With black and white pixels in the tensors, the round trip gives them back only if
    # the interventions use the loaders' constants (any other mean or std pushes an extreme
    # pixel out of [0, 1], and the clamp changes it).
    gen = torch.Generator().manual_seed(0)
    config = InterventionConfig(gamma_range=(1.0, 1.0), window_shift=0.0, noise_std=0.0,
                                stain_sigma=0.0, stain_bias=0.0, brightness=0.0)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    pixels[:, 0], pixels[:, 1] = 0, 255
    tiles = tile_tensor(pixels)
    np.testing.assert_allclose(intervene_histo(tiles, gen, config), tiles, atol=2e-4)
    grey = torch.rand(2, 1, 4, 4, generator=gen)
    grey[:, :, 0], grey[:, :, 1] = 0.0, 1.0
    mammo = (grey - 0.5) / 0.25
    np.testing.assert_allclose(intervene_mammo(mammo, gen, config), mammo, atol=1e-5)


def test_lesion_map_known_cells():
    # A 16-px image on a 4 x 4 grid of 4-px cells, cell centres at 2, 6, 10, 14 px. A circle
    # at column x = 12, row y = 4 with radius 3 covers the centres (10, 2), (14, 2), (10, 6),
    # (14, 6): rows 0-1, columns 2-3 (x is the column, y the row).
    expected = np.zeros((4, 4), dtype=np.float32)
    expected[0:2, 2:4] = 1
    np.testing.assert_array_equal(lesion_map(np.array([[12, 4, 3]]), 16, 4), expected)
    # A lesion smaller than a cell still marks the cell holding its centre (row 2, col 1).
    small = lesion_map(np.array([[5, 9, 0.5]]), 16, 4)
    assert small.sum() == 1 and small[2, 1] == 1
    assert lesion_map(np.zeros((0, 3)), 16, 4).sum() == 0


@pytest.mark.parametrize("size, patch", [(16, 4), (32, 8)])
def test_lesion_map_grid_side(size, patch):
    assert lesion_map(np.zeros((0, 3)), size, patch).shape == (size // patch,) * 2
