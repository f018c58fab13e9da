"""Pointing-game localisation of explanation heatmaps."""

from __future__ import annotations

import numpy as np
import pytest

from radpath.evaluation.localisation import (
    LocalisationMetric,
    localisation_hit,
    normalised_distance,
    peak_location,
    scale_to_image,
)


def _heatmap(row: int, col: int, shape: tuple[int, int] = (4, 8)) -> np.ndarray:
    heatmap = np.zeros(shape)
    heatmap[row, col] = 1.0
    return heatmap


def test_peak_is_the_centre_of_the_argmax_pixel():
    assert peak_location(_heatmap(1, 5)) == (5.5, 1.5)
    assert peak_location(np.ones((3, 3))) == (0.5, 0.5)  # first maximum wins


def test_hit_in_heatmap_coordinates():
    heatmap = _heatmap(1, 5)
    assert localisation_hit(heatmap, [(5.0, 2.0, 1.0)])
    assert not localisation_hit(heatmap, [(2.0, 2.0, 1.0)])
    assert localisation_hit(heatmap, [(2.0, 2.0, 1.0), (6.5, 1.5, 1.0)])  # any lesion
    assert localisation_hit(heatmap, [(5.5, 2.5, 1.0)])  # boundary counts


def test_hit_mapped_into_image_coordinates():
    # A 4 x 8 heatmap over a 400 x 800 image: pixel (1, 5) covers x 500..600, y 100..200.
    heatmap = _heatmap(1, 5)
    to_image = scale_to_image(heatmap.shape, (400, 800))
    np.testing.assert_allclose(to_image(np.array([[5.5, 1.5]])), [[550.0, 150.0]])
    assert localisation_hit(heatmap, [(560.0, 160.0, 20.0)], to_image=to_image)
    assert not localisation_hit(heatmap, [(560.0, 160.0, 20.0)])  # unmapped peak misses


def test_normalised_distance():
    # Image 30 x 40 has diagonal 50; the nearest centre is 5 away.
    assert normalised_distance((10.0, 10.0), [(13.0, 14.0, 1.0), (0.0, 30.0, 2.0)],
                               (30, 40)) == pytest.approx(0.1)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one lesion"):
        localisation_hit(_heatmap(0, 0), [])
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        peak_location(np.zeros(4))
    with pytest.raises(ValueError, match="non-finite"):
        peak_location(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(K, 3\)"):
        localisation_hit(_heatmap(0, 0), [(1.0, 2.0)])
    with pytest.raises(ValueError, match="to_image must map"):
        localisation_hit(_heatmap(0, 0), [(1.0, 2.0, 3.0)], to_image=lambda xy: xy[0])


def test_metric_accumulates_hits_and_distances():
    metric = LocalisationMetric(n_boot=200)
    size = (4, 8)
    metric.update(_heatmap(1, 5), [(5.5, 1.5, 1.0)], size)  # hit, distance 0
    metric.update(_heatmap(0, 0), [(3.5, 0.5, 1.0)], size)  # miss, distance 3
    metric.update(_heatmap(3, 7), [(7.5, 3.5, 0.5)], size)  # hit, distance 0
    metric.update(_heatmap(2, 2), [(2.5, 2.5, 2.0)], size)  # hit, distance 0
    result = metric.compute()
    assert result.hit_rate.value == 0.75 and result.hit_rate.n == 4
    assert result.hit_rate.ci_low < 0.75 < result.hit_rate.ci_high
    diagonal = np.hypot(4, 8)
    assert result.mean_distance.value == pytest.approx(3 / diagonal / 4)
    assert result.mean_distance.ci_low == 0.0
    assert result.mean_distance.ci_high == pytest.approx(3 / diagonal * 0.75, abs=0.1)
    metric.reset()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
