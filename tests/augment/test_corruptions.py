"""The nuisance shifts of the test-time adaptation benchmark."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from radpath.augment.corruptions import CORRUPTIONS, SEVERITIES, corruptions_of
from radpath.errors import RadpathError


def _mammogram() -> np.ndarray:
    return np.linspace(0.0, 1.0, 64 * 64, dtype=np.float32).reshape(64, 64)


def _tile(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.95, (32, 32, 3)).astype(np.float32)


def test_each_modality_has_its_corruptions() -> None:
    assert set(corruptions_of("mammo")) == {"gamma", "window", "noise"}
    assert set(corruptions_of("histo")) == {"stain", "blur"}


@pytest.mark.parametrize("name", ["gamma", "window", "noise", "stain", "blur"])
def test_severity_grades_the_change(name: str) -> None:
    corruption = CORRUPTIONS.get(name)
    image = _mammogram() if corruption.modality == "mammo" else _tile()
    changes = [float(np.abs(corruption(image, s, np.random.default_rng(0)) - image).mean())
               for s in SEVERITIES]
    assert changes[0] > 0
    assert all(a < b for a, b in pairwise(changes)), changes


@pytest.mark.parametrize("name", ["gamma", "window", "noise", "stain", "blur"])
def test_output_stays_an_image_in_range(name: str) -> None:
    corruption = CORRUPTIONS.get(name)
    image = _mammogram() if corruption.modality == "mammo" else _tile()
    out = corruption(image, 5, np.random.default_rng(1))
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_window_clips_the_bright_end() -> None:
    out = CORRUPTIONS.get("window")(_mammogram(), 3, np.random.default_rng(0))
    # The top 30% of the range all reads as white: the contrast there is gone.
    assert np.all(out[_mammogram() >= 0.7] == 1.0)
    assert np.all(out[_mammogram() < 0.69] < 1.0)


def test_stain_shift_darkens_nuclei_and_is_site_wide() -> None:
    corruption = CORRUPTIONS.get("stain")
    tile = _tile()
    first = corruption(tile, 3, np.random.default_rng(0))
    again = corruption(tile, 3, np.random.default_rng(99))
    np.testing.assert_array_equal(first, again)  # no per-image randomness
    # More haematoxylin (blue-purple) absorbs more red light.
    assert first[..., 0].mean() < tile[..., 0].mean()


def test_unknown_severity_is_refused() -> None:
    with pytest.raises(RadpathError, match="severity must be one of"):
        CORRUPTIONS.get("blur")(_tile(), 6, np.random.default_rng(0))
