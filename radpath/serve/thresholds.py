"""Operating thresholds shown beside the probabilities, read from an evaluation's metrics.

``radpath evaluate`` chooses each modality's threshold on the validation split (Youden's
J) and records it in ``operating_points.json`` (and in ``metrics.json``, beside the
sensitivity it was used for). The viewer shows those thresholds, and the rationale reads
the fused probability against the fused one; without the file the 0.5 shown is said to be
a default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radpath.errors import RadpathError

DEFAULT = {"threshold": 0.5, "from": "default 0.5"}
MODALITIES = ("mammo", "histo", "fused")


def read_thresholds(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """``{modality: {"threshold": t, "from": where it was chosen}}`` of the malignancy task,
    from ``operating_points.json`` or ``metrics.json``.

    Raises:
        RadpathError: the file cannot be read or is not a list of metric rows.
    """
    out = {m: dict(DEFAULT) for m in MODALITIES}
    if path is None:
        return out
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RadpathError(f"{path}: cannot read the metrics ({exc})") from None
    if not isinstance(rows, list):
        raise RadpathError(f"{path}: expected a list of rows (radpath evaluate's "
                           "operating_points.json or metrics.json)")
    for row in rows:
        if (isinstance(row, dict) and row.get("task") == "malignancy"
                and row.get("domain", "all") == "all" and row.get("modality") in MODALITIES
                and isinstance(row.get("threshold"), int | float)
                and 0.0 <= row["threshold"] <= 1.0):
            source = row.get("source", row.get("threshold_from", path.name))
            out[row["modality"]] = {"threshold": float(row["threshold"]), "from": str(source)}
    return out
