"""A picture of the preprocessing: preprocessed samples per domain, lesions circled.

One row per (modality, domain), a few samples each: the mammogram after segmentation,
crop, flip and normalisation with its lesions drawn where the geometry put them; the H&E
image's first tiles after stain normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from radpath.atomic import atomic_path
from radpath.data.manifest import Manifest, Record
from radpath.data.preprocess import PreprocessConfig, Preprocessed, RecordPreprocessor
from radpath.errors import RadpathError

CELL = 192
LABEL_WIDTH = 200
LESION_COLOUR = (255, 40, 40)


def write_preview(manifest: Manifest, out: str | Path, *, per_domain: int = 4,
                  config: PreprocessConfig | None = None) -> Path:
    """Render up to ``per_domain`` samples of each (modality, domain) into a PNG at ``out``."""
    pre = RecordPreprocessor(config)
    rows = []
    for (modality, domain), records in _groups(manifest).items():
        cells = [_cell(pre, manifest, record) for record in records[:per_domain]]
        cells += [np.full((CELL, CELL, 3), 255, np.uint8)] * (per_domain - len(cells))
        rows.append(np.hstack([_row_label(f"{modality}: {domain}", len(records)), *cells]))
    if not rows:
        raise RadpathError("the manifest has no images to preview")
    grid = np.vstack(rows)
    ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RadpathError(f"{out}: could not encode the preview PNG")
    with atomic_path(out) as tmp:
        tmp.write_bytes(png.tobytes())
    return Path(out)


def _groups(manifest: Manifest) -> dict[tuple[str, str], list[Record]]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in manifest:
        groups.setdefault((record.modality, record.domain), []).append(record)
    # Lesioned images first: the preview is there to check where lesions land.
    return {k: sorted(v, key=lambda r: -len(r.lesions)) for k, v in sorted(groups.items())}


def _cell(pre: RecordPreprocessor, manifest: Manifest, record: Record) -> np.ndarray:
    try:
        item = pre(record, manifest.resolve_path(record))
    except (RadpathError, ValueError) as exc:
        return _text_cell(f"unreadable: {type(exc).__name__}")
    return _mammo_cell(item) if item.modality == "mammo" else _histo_cell(item)


def _mammo_cell(item: Preprocessed) -> np.ndarray:
    grey = (np.clip(item.image, 0, 1) * 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.resize(grey, (CELL, CELL), interpolation=cv2.INTER_AREA),
                       cv2.COLOR_GRAY2RGB)
    scale = CELL / item.image.shape[0]
    for lesion in item.lesions:
        centre = (round(lesion.x * scale), round(lesion.y * scale))
        cv2.circle(rgb, centre, max(2, round(lesion.r * scale)), LESION_COLOUR, 2)
    return rgb


def _histo_cell(item: Preprocessed) -> np.ndarray:
    """Up to four of the image's most tissue-rich tiles, as large as the cell allows."""
    tiles: Sequence[np.ndarray] = list(item.image[:4])
    side = 1 if len(tiles) == 1 else 2
    size = CELL // side
    small = [cv2.resize(t, (size, size), interpolation=cv2.INTER_AREA) for t in tiles]
    small += [np.full((size, size, 3), 255, np.uint8)] * (side * side - len(small))
    cell = np.vstack([np.hstack(small[row * side:(row + 1) * side]) for row in range(side)])
    if not item.stain_normalised:
        cv2.putText(cell, "raw stain", (4, CELL - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (200, 0, 0), 1, cv2.LINE_AA)
    return cell


def _row_label(text: str, count: int) -> np.ndarray:
    panel = np.full((CELL, LABEL_WIDTH, 3), 255, np.uint8)
    cv2.putText(panel, text[:26], (6, CELL // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(panel, f"{count} images", (6, CELL // 2 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (90, 90, 90), 1, cv2.LINE_AA)
    return panel


def _text_cell(text: str) -> np.ndarray:
    cell = np.full((CELL, CELL, 3), 235, np.uint8)
    cv2.putText(cell, text[:28], (4, CELL // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (150, 0, 0), 1)
    return cell
