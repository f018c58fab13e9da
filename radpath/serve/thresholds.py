"""Operating thresholds shown beside the probabilities, read from an evaluation's metrics.

``radpath evaluate`` chooses each modality's threshold on the validation split (Youden's
J) and records it in ``metrics.json`` beside the sensitivity it was used for. The viewer
shows that threshold; without a ``metrics.json`` it says the 0.5 it shows is a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radpath.errors import RadpathError

DEFAULT = {"threshold": 0.5, "from": "default 0.5 (no metrics.json given)"}
MODALITIES = ("mammo", "histo", "fused")


def read_thresholds(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """``{modality: {"threshold": t, "from": where it was chosen}}`` of ``metrics.json``.

    Raises:
        RadpathError: the file cannot be read or is not a list of metric rows.
    """
    out = {m: dict(DEFAULT) for m in MODALITIES}
    if path is None:
        return out
    try:
        rows = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RadpathError(f"{path}: cannot read the metrics ({exc})") from None
    if not isinstance(rows, list):
        raise RadpathError(f"{path}: expected a list of metric rows (radpath evaluate's "
                           "metrics.json)")
    for row in rows:
        if (isinstance(row, dict) and row.get("metric") == "sensitivity"
                and row.get("domain") == "all" and row.get("modality") in MODALITIES
                and str(row.get("task", "")).startswith("malig")
                and isinstance(row.get("threshold"), int | float)):
            out[row["modality"]] = {"threshold": float(row["threshold"]),
                                    "from": str(row.get("threshold_from", "metrics.json"))}
    return out
