"""Do a region's histology links show the pattern of that region's lesion? (synthetic cohort)

The synthetic generator (:mod:`radpath.data.synthetic`) draws each patient's H&E tiles with
the pattern of the patient's label: normal, benign or malignant. So on a synthetic
mammogram the right pattern for a region is known: a lesion circle of a benign (malignant)
patient should link benign (malignant) tiles, and a patch of breast far from any lesion
should link normal tiles.

A *trial* is one region (a lesion's recorded circle, or the breast cell farthest from every
lesion) of one mammogram, linked (:func:`~radpath.explain.evidence.link_tiles`) against a
pool holding ``per_label`` tiles of each label drawn from other patients. A trial's hit is
whether its most similar tile has the expected label; random links hit with probability
``1 / 3`` (the pool's share of that label), computed exactly rather than sampled.
:func:`link_hit_rates` gives both rates and their difference with patient-level bootstrap
95% intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD, tile_tensor
from radpath.data.manifest import Record
from radpath.data.preprocess import RecordPreprocessor
from radpath.engine.checkpoint import LoadedRun
from radpath.explain.case import read_mammogram
from radpath.explain.evidence import (
    Region,
    breast_cells,
    link_tiles,
    region_embeddings,
    tile_embeddings,
)
from radpath.stats.estimate import percentile_interval

LABELS = ("normal", "benign", "malignant")


@dataclass(frozen=True)
class LinkTrial:
    """One region's links: the expected pattern, the linked tiles' labels, chance of a hit."""

    patient_id: str
    expected: str
    linked: tuple[str, ...]
    chance: float
    top: int = -1  # pool index of the most similar tile

    @property
    def hit(self) -> bool:
        return bool(self.linked) and self.linked[0] == self.expected


def _tiles(records: Sequence[Record], pre: RecordPreprocessor) -> list[tuple[str, str, np.ndarray]]:
    """``(patient, label, tile)`` of every tile of the histology records."""
    out = []
    for record in records:
        for tile in pre(record).image:
            out.append((record.patient_id, record.label, tile))
    return out


def _regions(record: Record, geometry, image: np.ndarray, grid: tuple[int, int]
             ) -> list[tuple[Region, str]]:
    """The record's lesion circles (its label) and the farthest breast cell ("normal")."""
    size = geometry.output_size
    found = []
    for lesion in record.lesions:
        cx, cy = geometry.to_output(np.array([lesion.x, lesion.y]))
        found.append((Region(0, lesion.x, lesion.y, lesion.r, 1.0,
                             output_xyr=(float(cx), float(cy), lesion.r * geometry.scale)),
                      record.label))
    cells = np.argwhere(breast_cells(image, grid))
    centres = (cells[:, ::-1] + 0.5) * (size / grid[0])  # (x, y) in output pixels
    lesion_xy = np.array([r.output_xyr[:2] for r, _ in found])
    far = centres[np.argmax(np.min(np.linalg.norm(centres[:, None] - lesion_xy[None], axis=-1),
                                   axis=1))]
    radius = size / grid[0]
    found.append((Region(0, 0.0, 0.0, 0.0, 0.0,
                         output_xyr=(float(far[0]), float(far[1]), float(radius))), "normal"))
    return found


def region_link_trials(run: LoadedRun, mammograms: Sequence[Record],
                       histology: Sequence[Record], *, per_label: int = 2, seed: int = 0,
                       centre_regions: bool = True,
                       centre_tiles: bool = False) -> list[LinkTrial]:
    """Link the regions of each lesioned mammogram against a label-balanced tile pool.

    Args:
        run: a trained run.
        mammograms: synthetic mammogram records with lesions (benign or malignant).
        histology: synthetic H&E records to draw the pools from (never the same patient's).
        per_label: tiles of each label in a pool.
        seed: seed of the pools.
        centre_regions: subtract each region's whole-view projection (as explanations do).
        centre_tiles: subtract the pool's mean tile projection (explanations do not).
    """
    pre = RecordPreprocessor(run.config.data.preprocess)
    model = run.algorithm.model
    tiles = _tiles(histology, pre)
    rng = np.random.default_rng(seed)
    size = run.config.data.preprocess.mammo.size
    grid = model.backbone.grid_size("mammo", (size, size))
    trials = []
    for record in mammograms:
        result = pre.mammo.transform(read_mammogram(record.path), laterality=record.laterality,
                                     lesions=record.lesions)
        pool = []
        for label in LABELS:
            choices = [t for t in tiles if t[1] == label and t[0] != record.patient_id]
            picks = rng.choice(len(choices), size=min(per_label, len(choices)), replace=False)
            pool.extend(choices[i] for i in picks)
        found = _regions(record, result.geometry, result.image, grid)
        view = torch.from_numpy(((result.image - MAMMO_MEAN) / MAMMO_STD)[None, None]
                                .astype(np.float32))
        with torch.no_grad():
            patches = model.view_tokens(view)
            cls = model.encode_images(tile_tensor(np.stack([t[2] for t in pool])), "histo")[0]
            regions = [r for r, _ in found]
            link_tiles(regions, region_embeddings(model, patches, regions, grid, size,
                                                  centred=centre_regions),
                       tile_embeddings(model, cls, centred=centre_tiles), len(pool))
        for region, expected in found:
            labels = tuple(pool[t][1] for t, _ in region.links)
            chance = sum(t[1] == expected for t in pool) / len(pool)
            top = region.links[0][0] if region.links else -1
            trials.append(LinkTrial(record.patient_id, expected, labels, chance, top))
    return trials


def link_hit_rates(trials: Sequence[LinkTrial], *, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{"region": ..., "random": ..., "difference": ...}``, each ``(estimate, low, high)``:
    top-1 hit rates, bootstrapped over patients (a patient's trials are drawn together)."""
    if not trials:
        raise ValueError("no link trials: give lesioned synthetic mammograms")
    patients = sorted({t.patient_id for t in trials})
    index = {p: i for i, p in enumerate(patients)}
    hits = np.zeros(len(patients))
    chance = np.zeros(len(patients))
    count = np.zeros(len(patients))
    for trial in trials:
        i = index[trial.patient_id]
        hits[i] += trial.hit
        chance[i] += trial.chance
        count[i] += 1
    draws = np.random.default_rng(seed).multinomial(
        len(patients), np.full(len(patients), 1 / len(patients)), size=n_boot)
    out = {}
    for name, values in (("region", hits), ("random", chance), ("difference", hits - chance)):
        estimate = float(values.sum() / count.sum())
        boot = (draws @ values) / (draws @ count)
        low, high = percentile_interval(boot, level)
        out[name] = (estimate, float(low), float(high))
    return out


def distinct_links(trials: Sequence[LinkTrial]) -> float:
    """Share of mammograms whose regions do not all link the same most similar tile."""
    by_patient: dict[str, set[int]] = {}
    for trial in trials:
        by_patient.setdefault(trial.patient_id, set()).add(trial.top)
    return float(np.mean([len(v) > 1 for v in by_patient.values()]))
