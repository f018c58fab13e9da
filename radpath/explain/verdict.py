"""The rationale's first sentence: the call, read against the operating threshold.

The wording follows the probability and the threshold and nothing else, so it cannot
contradict them: "suspicious" exactly when ``p >= threshold``, the side named to match, and
both numbers printed with as many decimals as it takes for the printed values to order the
same way as the true ones (0.379 against 0.381 is never shown as "0.38 is below 0.38").
"""

from __future__ import annotations

SUSPICIOUS = "suspicious for malignancy"
NOT_SUSPICIOUS = "not suspicious for malignancy"
# Distances from the threshold at which the call is described as clear, or as far.
CLEAR, FAR = 0.1, 0.3


def digits(p: float, threshold: float, *, least: int = 2, most: int = 10) -> int:
    """The fewest decimals (at least ``least``) whose rounding keeps ``p`` and ``threshold``
    in the same order, equal only when they agree to ``most`` decimals."""
    for n in range(least, most + 1):
        a, b = round(p, n), round(threshold, n)
        if (a < b) == (p < threshold) and a != b:
            return n
    return most


def certainty(p: float, threshold: float) -> str:
    """How far the probability lies from the threshold, in words."""
    distance = abs(p - threshold)
    if distance >= FAR:
        return "far from the threshold"
    if distance >= CLEAR:
        return "clearly on that side of the threshold"
    return f"close to the threshold (within {distance:.2g}): an uncertain call"


def verdict(p: float, threshold: float, source: str = "") -> str:
    """'fused probability 0.62 is at or above the operating threshold 0.41 (validation):
    suspicious for malignancy; clearly on that side of the threshold'."""
    suspicious = p >= threshold
    side, call = ("at or above", SUSPICIOUS) if suspicious else ("below", NOT_SUSPICIOUS)
    n = digits(p, threshold)
    where = f" ({source})" if source else ""
    return (f"fused probability {p:.{n}f} is {side} the operating threshold "
            f"{threshold:.{n}f}{where}: {call}; {certainty(p, threshold)}")
