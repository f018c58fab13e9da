"""Reference values of the maps, worked by hand on small inputs (not only shapes)."""

import numpy as np
import torch

from radpath.explain.maps import localisation_maps, mil_maps, rollout


def test_rollout_of_two_blocks_by_hand():
    # Tokens: CLS and two patches (a 1 x 2 grid). Each block adds the residual identity and
    # renormalises rows: block 1 becomes [[.75, .125, .125], I...], block 2
    # [[.5, .5, 0], I...]; the CLS row of block 2 @ block 1 is [.375, .5625, .0625].
    first = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    second = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # Two heads each, averaged: the heads below average to the matrices above.
    spread = torch.tensor([[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    blocks = [torch.stack([m + spread, m - spread])[None] for m in (first, second)]
    maps = rollout(blocks, (1, 2))
    assert maps.shape == (1, 1, 2)
    np.testing.assert_allclose(maps[0, 0].numpy(), [0.5625, 0.0625], rtol=1e-6)


def test_mil_map_is_each_existing_views_weight():
    batch = {"mammo_mask": torch.tensor([[True, False, True]])}
    out = {"mammo_attention": torch.tensor([[0.25, 0.0, 0.75]])}
    maps = mil_maps(out, batch, (2, 3))
    assert maps.shape == (2, 2, 3)
    np.testing.assert_array_equal(maps[0], np.full((2, 3), 0.25, dtype=np.float32))
    np.testing.assert_array_equal(maps[1], np.full((2, 3), 0.75, dtype=np.float32))


def test_mil_map_of_a_windowed_model_spreads_each_window_weight():
    batch = {"mammo_mask": torch.tensor([[True]])}
    # A 2 x 4 token grid of two 2 x 2 windows with weights 0.1 and 0.9.
    out = {"mammo_attention": torch.tensor([[1.0]]),
           "mammo_window_attention": torch.tensor([[[0.1, 0.9]]])}
    maps = mil_maps(out, batch, (2, 4), window_grid=(2, 2))
    np.testing.assert_allclose(maps[0], [[0.1, 0.1, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9]])


def test_localisation_map_is_the_sigmoid_of_the_token_scores():
    batch = {"mammo_mask": torch.tensor([[False, True]])}
    scores = torch.tensor([[[[9.0, 9.0]], [[0.0, np.log(3.0)]]]])  # (1, 2 views, 1, 2)
    maps = localisation_maps({"token_scores": scores}, batch)
    np.testing.assert_allclose(maps, [[[0.5, 0.75]]], rtol=1e-6)
