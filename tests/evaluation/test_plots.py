"""Report figures are valid, non-trivial PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from radpath.evaluation.plots import (
    ReliabilityCurve,
    RocCurve,
    confusion_figure,
    reliability_figure,
    roc_band,
    roc_figure,
)
from radpath.stats.metrics import confusion


def _data(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, y + rng.normal(0.0, 1.0, n)


def _check_png(data: bytes) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    image = Image.open(io.BytesIO(data))
    image.load()
    pixels = np.asarray(image.convert("RGB"))
    assert min(image.size) > 200 and pixels.std() > 10
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10  # colours, not one flat fill


def test_roc_band_is_ordered_and_brackets_the_curve():
    y, s = _data()
    grid, low, high = roc_band(y, s, n_boot=200, seed=0)
    assert grid[0] == 0.0 and grid[-1] == 1.0 and len(grid) == 101
    assert (low <= high).all() and high[-1] == 1.0
    assert (np.diff(low) >= 0).all() and (np.diff(high) >= 0).all()
    assert (high - low)[50] > 0.02
    grouped = roc_band(y, s, n_boot=100, groups=np.arange(len(y)) // 3)
    assert grouped[1].shape == (101,)
    with pytest.raises(ValueError, match="both classes"):
        roc_band(np.ones(4), np.arange(4.0))


def test_roc_figure():
    y, s = _data()
    curves = [RocCurve.from_scores("mammo", y, s, n_boot=100),
              RocCurve.from_scores("histo", y, s + np.random.default_rng(1).normal(0, 1, 120),
                                   n_boot=100)]
    _check_png(roc_figure(curves))
    bare = RocCurve("plain", np.array([0, 0.5, 1]), np.array([0, 0.8, 1]), 0.9, 0.8, 0.95)
    _check_png(roc_figure([bare]))
    with pytest.raises(ValueError, match="at least one curve"):
        roc_figure([])


def test_reliability_figure():
    y, s = _data()
    p = 1.0 / (1.0 + np.exp(-s))
    curves = [ReliabilityCurve.from_predictions("model", y, p, n_boot=100),
              ReliabilityCurve.from_predictions("quantile", y, p, 5, strategy="quantile",
                                                n_boot=100)]
    assert curves[0].ece is not None
    _check_png(reliability_figure(curves))


def test_confusion_figure():
    rng = np.random.default_rng(0)
    labels = ["normal", "benign", "malignant"]
    matrix = confusion(rng.integers(0, 3, 90), rng.integers(0, 3, 90), [0, 1, 2])
    _check_png(confusion_figure(matrix, labels))
    with pytest.raises(ValueError, match=r"shape \(3, 3\) but there are 2 labels"):
        confusion_figure(matrix, labels[:2])
