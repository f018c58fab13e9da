"""Report figures as PNG bytes: ROC curves with bootstrap bands, reliability, confusion.

Drawn with Pillow (a core dependency), so nothing here needs matplotlib. Every legend
entry carries its 95% confidence interval.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from sklearn.metrics import roc_curve

from radpath.stats.bootstrap import bootstrap_weights, weighted_roc
from radpath.stats.calibration import expected_calibration_error, reliability_curve
from radpath.stats.estimate import Estimate, as_binary_labels, as_scores, check_level
from radpath.stats.metrics import auc_with_ci

# The tab10 palette: distinct, colour-blind tolerant.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
GREY, BLACK, WHITE = (150, 150, 150), (0, 0, 0), (255, 255, 255)


# --------------------------------------------------------------------------- data


def roc_band(y_true: Any, scores: Any, n_boot: int = 1000, seed: int = 0, *,
             groups: Any | None = None, level: float = 0.95,
             grid_size: int = 101) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise bootstrap band of the ROC curve by vertical averaging.

    Each class-stratified (patient-level when ``groups`` is given) resample's ROC is read
    at a fixed FPR grid, taking at each FPR the highest TPR reached without exceeding it;
    the band is the percentile interval of those TPRs at each grid point.

    Returns:
        ``fpr_grid``, ``tpr_low`` and ``tpr_high``, each ``(grid_size,)``.
    """
    check_level(level)
    y_true = as_binary_labels(y_true)
    scores = as_scores(scores, len(y_true))
    if grid_size < 2:
        raise ValueError(f"grid_size must be >= 2, got {grid_size}")
    if y_true.min(initial=1) == y_true.max(initial=0):
        raise ValueError(f"an ROC band needs both classes; labels are "
                         f"{np.unique(y_true).tolist()}")
    grid = np.linspace(0.0, 1.0, grid_size)
    rng = np.random.default_rng(seed)
    curves = []
    for weights in bootstrap_weights(y_true, groups, n_boot, rng):
        for fpr, tpr in zip(*weighted_roc(scores, y_true, weights), strict=True):
            if np.isfinite(fpr).all() and np.isfinite(tpr).all():
                curves.append(tpr[np.searchsorted(fpr, grid, side="right") - 1])
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(np.stack(curves), [tail, 1.0 - tail], axis=0)
    return grid, low, high


@dataclass(frozen=True)
class RocCurve:
    """One ROC curve for :func:`roc_figure`, with its AUC interval and optional band."""

    name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    ci_low: float
    ci_high: float
    band_fpr: np.ndarray | None = None
    band_low: np.ndarray | None = None
    band_high: np.ndarray | None = None

    @classmethod
    def from_scores(cls, name: str, y_true: Any, scores: Any, *, groups: Any | None = None,
                    n_boot: int = 1000, seed: int = 0) -> RocCurve:
        """Curve, AUC interval and band from labels and scores (same bootstrap settings)."""
        auc = auc_with_ci(y_true, scores, groups=groups, n_boot=n_boot, seed=seed)
        fpr, tpr, _ = roc_curve(as_binary_labels(y_true), scores)
        grid, low, high = roc_band(y_true, scores, n_boot, seed, groups=groups)
        return cls(name, fpr, tpr, auc.value, auc.ci_low, auc.ci_high, grid, low, high)


@dataclass(frozen=True)
class ReliabilityCurve:
    """One reliability curve for :func:`reliability_figure` (see ``reliability_curve``)."""

    name: str
    mean_predicted: np.ndarray
    observed_frequency: np.ndarray
    counts: np.ndarray
    ece: Estimate | None = None

    @classmethod
    def from_predictions(cls, name: str, y_true: Any, probabilities: Any, n_bins: int = 10,
                         *, strategy: str = "uniform", n_boot: int = 1000,
                         seed: int = 0) -> ReliabilityCurve:
        _, observed, predicted, counts = reliability_curve(y_true, probabilities, n_bins,
                                                           strategy=strategy)
        ece = expected_calibration_error(y_true, probabilities, n_bins, strategy=strategy,
                                         n_boot=n_boot, seed=seed)
        return cls(name, predicted, observed, counts, ece)


# --------------------------------------------------------------------------- drawing


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ValueError, OSError):  # no FreeType: the fixed bitmap font
        return ImageFont.load_default()


class _Plot:
    """An RGB canvas with one data panel mapping [x0, x1] x [y0, y1] to pixels."""

    def __init__(self, size: tuple[int, int] = (640, 600),
                 panel: tuple[int, int, int, int] = (80, 50, 610, 530)) -> None:
        self.image = Image.new("RGB", size, WHITE)
        self.draw = ImageDraw.Draw(self.image, "RGBA")  # RGBA fills blend: bands
        self.panel = panel
        self.limits = (0.0, 1.0, 0.0, 1.0)

    def px(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        left, top, right, bottom = self.panel
        x0, x1, y0, y1 = self.limits
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        return (left + (x - x0) / (x1 - x0) * (right - left),
                bottom - (y - y0) / (y1 - y0) * (bottom - top))

    def text(self, xy: tuple[float, float], text: str, size: int = 14,
             anchor: str = "la", fill: tuple[int, int, int] = BLACK) -> None:
        self.draw.text(xy, text, fill=fill, font=_font(size), anchor=anchor)

    def vertical_text(self, xy: tuple[float, float], text: str, size: int = 14) -> None:
        font = _font(size)
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=font)
        label = Image.new("RGBA", (right - left + 4, bottom - top + 4), (255, 255, 255, 0))
        ImageDraw.Draw(label).text((2 - left, 2 - top), text, fill=BLACK, font=font)
        label = label.rotate(90, expand=True)
        self.image.paste(label, (int(xy[0] - label.width / 2), int(xy[1] - label.height / 2)),
                         label)

    def line(self, x: Any, y: Any, colour: tuple[int, ...], width: int = 2,
             dashed: bool = False) -> None:
        px, py = self.px(x, y)
        points = list(zip(px.tolist(), py.tolist(), strict=True))
        if not dashed:
            self.draw.line(points, fill=colour, width=width, joint="curve")
            return
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            length = float(np.hypot(bx - ax, by - ay))
            for start in np.arange(0.0, length, 12.0):
                end = min(start + 7.0, length)
                t0, t1 = start / max(length, 1e-9), end / max(length, 1e-9)
                self.draw.line([(ax + t0 * (bx - ax), ay + t0 * (by - ay)),
                                (ax + t1 * (bx - ax), ay + t1 * (by - ay))],
                               fill=colour, width=width)

    def band(self, x: Any, low: Any, high: Any, colour: tuple[int, int, int]) -> None:
        px, p_low = self.px(x, low)
        _, p_high = self.px(x, high)
        polygon = list(zip(px.tolist(), p_high.tolist(), strict=True))
        polygon += list(zip(px[::-1].tolist(), p_low[::-1].tolist(), strict=True))
        self.draw.polygon(polygon, fill=(*colour, 60))

    def axes(self, xlabel: str, ylabel: str, title: str,
             ticks: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), *,
             y_ticks: bool = True) -> None:
        """Frame, grid, labels; ``y_ticks=False`` for a y axis that carries categories."""
        left, top, right, bottom = self.panel
        for tick in ticks:
            tx, ty = self.px(tick, tick)
            self.draw.line([(tx, top), (tx, bottom)], fill=(235, 235, 235), width=1)
            self.draw.line([(tx, bottom), (tx, bottom + 5)], fill=BLACK, width=1)
            self.text((tx, bottom + 8), f"{tick:.1f}", 12, anchor="mt")
            if y_ticks:
                self.draw.line([(left, ty), (right, ty)], fill=(235, 235, 235), width=1)
                self.draw.line([(left - 5, ty), (left, ty)], fill=BLACK, width=1)
                self.text((left - 8, ty), f"{tick:.1f}", 12, anchor="rm")
        self.draw.rectangle([left, top, right, bottom], outline=BLACK, width=1)
        self.text(((left + right) / 2, bottom + 30), xlabel, 14, anchor="mt")
        self.vertical_text((left - 55, (top + bottom) / 2), ylabel, 14)
        self.text(((left + right) / 2, top - 15), title, 16, anchor="mb")

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        """Entries stacked in the panel's bottom-right corner."""
        if not entries:
            return
        font = _font(12)
        width = max(self.draw.textlength(text, font=font) for text, _ in entries) + 40
        height = 20 * len(entries) + 8
        _, _, right, bottom = self.panel
        x0, y0 = right - width - 8, bottom - height - 8
        self.draw.rectangle([x0, y0, right - 8, bottom - 8], fill=(255, 255, 255, 230),
                            outline=GREY)
        for i, (text, colour) in enumerate(entries):
            y = y0 + 14 + 20 * i
            self.draw.line([(x0 + 8, y), (x0 + 28, y)], fill=colour, width=3)
            self.text((x0 + 34, y), text, 12, anchor="lm")

    def png(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()


def _colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def roc_figure(curves: Sequence[RocCurve], *, title: str = "ROC curve") -> bytes:
    """ROC curves, each with its bootstrap band (if given) and AUC [95% CI] in the legend."""
    if not curves:
        raise ValueError("roc_figure needs at least one curve, got none")
    plot = _Plot()
    plot.axes("False positive rate (1 - specificity)", "True positive rate (sensitivity)",
              title)
    plot.line([0, 1], [0, 1], GREY, width=1, dashed=True)
    for i, curve in enumerate(curves):
        if curve.band_fpr is not None and curve.band_low is not None \
                and curve.band_high is not None:
            plot.band(curve.band_fpr, curve.band_low, curve.band_high, _colour(i))
    for i, curve in enumerate(curves):
        plot.line(curve.fpr, curve.tpr, _colour(i), width=3)
    plot.legend([(f"{c.name}  AUC {c.auc:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}]", _colour(i))
                 for i, c in enumerate(curves)])
    return plot.png()


def reliability_figure(curves: Sequence[ReliabilityCurve], *,
                       title: str = "Reliability") -> bytes:
    """Observed frequency against mean predicted probability per bin, with case counts.

    Empty bins are skipped; a rug of spikes under the panel shows how many cases each
    bin holds (relative to the fullest bin).
    """
    if not curves:
        raise ValueError("reliability_figure needs at least one curve, got none")
    plot = _Plot(size=(640, 680))
    plot.axes("Mean predicted probability", "Observed frequency of positives", title)
    plot.line([0, 1], [0, 1], GREY, width=1, dashed=True)
    left, _, right, bottom = plot.panel
    strip_top, strip_bottom = bottom + 62, bottom + 130
    plot.draw.rectangle([left, strip_top, right, strip_bottom], outline=GREY)
    plot.text((left - 8, (strip_top + strip_bottom) / 2), "cases", 12, anchor="rm")
    peak = max(max(np.max(c.counts, initial=0) for c in curves), 1)
    entries = []
    for i, curve in enumerate(curves):
        shown = np.asarray(curve.counts) > 0
        x = np.asarray(curve.mean_predicted, dtype=float)[shown]
        y = np.asarray(curve.observed_frequency, dtype=float)[shown]
        if len(x) > 1:
            plot.line(x, y, _colour(i), width=2)
        px, py = plot.px(x, y)
        for cx, cy in zip(px.tolist(), py.tolist(), strict=True):
            plot.draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=_colour(i))
        for cx, count in zip(px.tolist(), np.asarray(curve.counts)[shown].tolist(),
                             strict=True):
            height = (strip_bottom - strip_top - 4) * count / peak
            cx += 3 * i  # side by side when several curves share a bin
            plot.draw.line([(cx, strip_bottom), (cx, strip_bottom - height)],
                           fill=_colour(i), width=3)
        ece = "" if curve.ece is None else (
            f"  ECE {curve.ece.value:.3f} [{curve.ece.ci_low:.3f}, {curve.ece.ci_high:.3f}]")
        entries.append((f"{curve.name}{ece}", _colour(i)))
    plot.legend(entries)
    return plot.png()


def confusion_figure(matrix: Any, labels: Sequence[str], *,
                     title: str = "Confusion matrix") -> bytes:
    """Counts per (true, predicted) cell, shaded by the row fraction (recall per class)."""
    matrix = np.asarray(matrix)
    k = len(labels)
    if matrix.shape != (k, k):
        raise ValueError(f"matrix has shape {matrix.shape} but there are {k} labels")
    if (matrix < 0).any():
        raise ValueError(f"matrix holds negative counts: {matrix[matrix < 0][:5].tolist()}")
    cell = max(48, min(120, 480 // max(k, 1)))
    font = _font(13)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    margin = int(max(probe.textlength(str(lab), font=font) for lab in labels)) + 50
    plot = _Plot(size=(margin + k * cell + 30, margin + k * cell + 40),
                 panel=(margin, margin, margin + k * cell, margin + k * cell))
    rows = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = np.where(rows > 0, matrix / np.maximum(rows, 1), 0.0)
    for r in range(k):
        for c in range(k):
            x0, y0 = margin + c * cell, margin + r * cell
            shade = float(fraction[r, c])
            colour = tuple(round(255 - shade * (255 - v)) for v in (8, 69, 148))
            plot.draw.rectangle([x0, y0, x0 + cell, y0 + cell], fill=colour, outline=GREY)
            ink = WHITE if shade > 0.5 else BLACK
            plot.text((x0 + cell / 2, y0 + cell / 2 - 8), str(int(matrix[r, c])), 14, "mm", ink)
            plot.text((x0 + cell / 2, y0 + cell / 2 + 10), f"{100 * shade:.0f}%", 11, "mm", ink)
    for i, label in enumerate(labels):
        centre = margin + i * cell + cell / 2
        plot.text((margin - 8, centre), str(label), 13, anchor="rm")
        plot.text((centre, margin - 8), str(label), 13, anchor="md")
    plot.text((margin + k * cell / 2, margin - 30), "predicted", 13, anchor="md")
    plot.vertical_text((14, margin + k * cell / 2), "true", 13)
    plot.text((margin + k * cell / 2, margin + k * cell + 12), title, 15, anchor="mt")
    return plot.png()
