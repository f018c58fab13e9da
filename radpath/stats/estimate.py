"""A metric's value with its confidence interval, the checks every metric makes of its
inputs, and the stateful base the metric classes share (``update`` / ``compute`` / ``reset``,
as in MONAI)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Estimate:
    """A metric value with its 95% confidence interval and the number of cases."""

    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}] (n={self.n})"


NAN_ESTIMATE = Estimate(float("nan"), float("nan"), float("nan"), 0)

# --------------------------------------------------------------------------- validation


def as_binary_labels(y: Any, name: str = "y_true") -> np.ndarray:
    """Check that ``y`` is a 1-D array of 0/1 labels and return it as int."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(int)
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{name} must hold 0/1 labels, got dtype {y.dtype}")
    bad = np.unique(y[~np.isin(y, (0, 1))])
    if bad.size:
        raise ValueError(f"{name} must hold 0/1 labels only; found {bad[:5].tolist()}")
    return y.astype(int)


def as_scores(scores: Any, n: int, name: str = "scores") -> np.ndarray:
    """Check that ``scores`` is 1-D, finite and of length ``n``; return it as float64."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {scores.shape}")
    if len(scores) != n:
        raise ValueError(f"{name} has {len(scores)} values but the labels have {n}")
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"{name} holds {bad.size} non-finite values (NaN/inf), first at "
                         f"index {int(bad[0])}: {scores[bad[0]]}")
    return scores


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def percentile_interval(draws: np.ndarray, level: float) -> tuple[float, float]:
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return float(low), float(high)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Estimate:
    """A proportion with its Wilson score interval (NaNs, ``n=0`` when ``n`` is 0)."""
    check_level(level)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return NAN_ESTIMATE
    z = float(norm.ppf(0.5 + level / 2.0))
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)



class Cumulative:
    """Gathers aligned 1-D arrays over ``update`` calls."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []

    def _append(self, *arrays: Any) -> None:
        arrays = tuple(np.atleast_1d(np.asarray(a)) for a in arrays)
        lengths = {len(a) for a in arrays}
        if len(lengths) != 1:
            raise ValueError(f"update() got arrays of different lengths {sorted(lengths)}")
        self._parts.append(arrays)

    def _gathered(self) -> tuple[np.ndarray, ...]:
        if not self._parts:
            raise ValueError(f"{type(self).__name__}.compute() called before any update()")
        return tuple(np.concatenate(column) for column in zip(*self._parts, strict=True))

