"""Deletion/insertion curves, the randomisation sanity check and the localisation hit."""

import numpy as np
import pytest
import torch

from radpath.explain.faithfulness import (
    deletion_curve,
    localisation_hit,
    mammo_probability,
    random_map,
    randomised_copy,
    rank_correlation,
)
from radpath.explain.maps import compute_maps
from tests.explain.test_maps import _blob_image, _two_view_batch


@pytest.mark.parametrize("insertion", [False, True])
def test_curves_are_finite_probabilities_of_the_right_length(tiny_model, insertion):
    image = _blob_image()
    curve = deletion_curve(tiny_model, image, random_map((4, 4)), steps=8, insertion=insertion)
    assert curve.fractions.shape == curve.probabilities.shape == (9,)
    assert np.all(np.diff(curve.fractions) > 0) and curve.fractions[[0, -1]].tolist() == [0, 1]
    assert np.isfinite(curve.probabilities).all()
    assert ((curve.probabilities >= 0) & (curve.probabilities <= 1)).all()
    assert 0 <= curve.auc <= 1
    full = float(mammo_probability(tiny_model, image[None])[0])
    assert np.isclose(curve.probabilities[-1 if insertion else 0], full, atol=1e-5)


def test_deletion_of_the_deciding_token_drops_fastest(tiny_model):
    # A model that only looks at one patch: deleting it first must be the fastest drop.
    model = tiny_model
    image = _blob_image()
    probability = float(mammo_probability(model, image[None])[0])
    best = np.zeros((4, 4))
    scores = []
    for cell in range(16):
        trial = np.zeros((4, 4))
        trial.flat[cell] = 1.0
        p = deletion_curve(model, image, trial, steps=16).probabilities[1]
        scores.append(abs(p - probability))
    best.flat[int(np.argmax(scores))] = 1.0
    most = deletion_curve(model, image, best, steps=16).probabilities[1]
    least = deletion_curve(model, image, -best, steps=16).probabilities[1]
    assert abs(most - probability) >= abs(least - probability)


def test_sanity_check_correlation_in_range_and_weights_change(tiny_model):
    batch = _two_view_batch()
    clone = randomised_copy(tiny_model, seed=1)
    before = dict(tiny_model.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in clone.named_parameters())
    for kind in ("rollout", "gradcam", "localisation"):
        trained = compute_maps(tiny_model, batch, [kind])[kind]
        rand = compute_maps(clone, batch, [kind])[kind]
        value = rank_correlation(trained, rand)
        assert -1.0 <= value <= 1.0
    assert np.isnan(rank_correlation(np.ones(4), np.arange(4)))
    assert rank_correlation(np.arange(5), np.arange(5) * 3) == pytest.approx(1.0)


def test_localisation_hit():
    image = np.zeros((32, 32), np.float32)
    image[:, :20] = 0.5
    grid = np.zeros((4, 4))
    grid[1, 1] = 1.0  # cell centred at (12, 12)
    assert localisation_hit(grid, image, np.array([[12.0, 12.0, 3.0]]))
    assert not localisation_hit(grid, image, np.array([[28.0, 28.0, 3.0]]))
