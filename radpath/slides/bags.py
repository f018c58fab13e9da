"""Slide bags for the gated-attention MIL: one bag per patient, of cached patch features.

A CAMELYON16 patient is one slide; a CAMELYON17 patient is five. Each bag carries the
patient's malignancy target, its ordinal grade (pN stage; -1 when unknown) and, for slides
with lesion outlines, each patch's tumour fraction (localisation supervision; -1 when the
slide has no outline to say).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from radpath.data.asap import patch_tumour_fraction, read_asap_xml
from radpath.data.manifest import Record
from radpath.slides.features import read_features


@dataclass(frozen=True)
class SlideBag:
    """One patient's bag."""

    patient_id: str
    image_ids: tuple[str, ...]
    features: torch.Tensor        # (K, D)
    coords: torch.Tensor          # (K, 2) level-0 corners
    slide_index: torch.Tensor     # (K,) which of image_ids each patch comes from
    patch_tumour: torch.Tensor    # (K,) fraction in [0, 1], -1 unknown
    malignant: float              # 1.0 / 0.0
    grade: int                    # -1 unknown


def build_bags(records: Sequence[Record], feature_dir: str | Path, *, patch_size0: int,
               dimensions: dict[str, tuple[int, int]],
               annotations: dict[str, Path | None] | None = None) -> list[SlideBag]:
    """Group ``records`` by patient and load their cached features into bags.

    Args:
        feature_dir: where ``<image_id>.h5`` feature files are.
        patch_size0: side of a patch in level-0 pixels (for the tumour fractions).
        dimensions: level-0 ``(width, height)`` of each slide, by image id.
        annotations: the ASAP XML of each slide that has one, by image id.
    """
    annotations = annotations or {}
    by_patient: dict[str, list[Record]] = {}
    for record in records:
        by_patient.setdefault(record.patient_id, []).append(record)
    bags = []
    for patient, slides in by_patient.items():
        parts = [_slide_part(r, Path(feature_dir), patch_size0, dimensions[r.image_id],
                             annotations.get(r.image_id), labelled=r.label == "normal")
                 for r in slides]
        features, coords, tumour = (np.concatenate([p[i] for p in parts]) for i in range(3))
        index = np.concatenate([np.full(len(p[0]), i) for i, p in enumerate(parts)])
        grades = {int(r.grade) for r in slides if r.grade}
        bags.append(SlideBag(
            patient, tuple(r.image_id for r in slides), torch.from_numpy(features),
            torch.from_numpy(coords), torch.from_numpy(index), torch.from_numpy(tumour),
            float(any(r.label == "malignant" for r in slides)),
            grades.pop() if len(grades) == 1 else -1))
    return bags


def _slide_part(record: Record, feature_dir: Path, size0: int, dims: tuple[int, int],
                xml: Path | None, *, labelled: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features, coords = read_features(feature_dir / f"{record.image_id}.h5")
    if xml is not None:
        tumour = patch_tumour_fraction(read_asap_xml(xml), coords, size0, dims)
    else:  # a normal slide has no tumour anywhere; a tumour slide without outline: unknown
        tumour = np.full(len(coords), 0.0 if labelled else -1.0, np.float32)
    return features.astype(np.float32), coords.astype(np.int64), tumour.astype(np.float32)
