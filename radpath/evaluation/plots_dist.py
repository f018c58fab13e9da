"""The distribution of predicted probabilities per class, with the operating threshold.

A strip plot shows what an AUC hides: whether the two classes are apart by a margin a
threshold can use, or whether every probability sits within a hair of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from radpath.evaluation.plots import BLACK, GREY, _colour, _Plot


def probability_strip_figure(y_true: Any, probabilities: Any, threshold: float, *,
                             labels: Sequence[str] = ("other", "positive"),
                             title: str = "Predicted probabilities", seed: int = 0) -> bytes:
    """One row of jittered dots per class over [0, 1], and the threshold as a dashed line."""
    y = np.asarray(y_true).astype(int)
    p = np.asarray(probabilities, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and probabilities {p.shape} differ in shape")
    # A wide left margin: the class names and counts sit there, not over the dots.
    plot = _Plot(size=(640, 300), panel=(140, 50, 620, 230))
    plot.axes("Predicted probability", "", title, ticks=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
              y_ticks=False)
    rng = np.random.default_rng(seed)
    left, top, _, bottom = plot.panel
    band = (bottom - top) / 2
    for k in (0, 1):
        values = p[y == k]
        centre = bottom - band * (k + 0.5)
        px, _ = plot.px(values, np.zeros_like(values))
        jitter = rng.uniform(-band * 0.3, band * 0.3, len(values))
        for cx, cy in zip(px.tolist(), (centre + jitter).tolist(), strict=True):
            plot.draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=(*_colour(k), 170))
        plot.text((left - 8, centre), f"{labels[k]} ({len(values)})", 12, anchor="rm")
    tx, _ = plot.px(threshold, 0)
    for y0 in np.arange(top, bottom, 10.0):
        plot.draw.line([(float(tx), y0), (float(tx), min(y0 + 6, bottom))], fill=BLACK, width=2)
    plot.text((float(tx), top + 4), f"threshold {threshold:.3f}", 12, anchor="la", fill=GREY)
    return plot.png()
