"""Reference baselines on the same patient folds as benchmarks/real_cpu_cv.py.

    .venv/bin/python benchmarks/real_baselines.py --work /tmp/radpath-cv [--seeds 3]
        [--modality mammo|histo] [--baseline NAME --table FILE] [--group patient|batch]
        [--scores DIR]

A recipe is only "better" than the floors the project was set if the floors are measured
the same way: the same units, folds, preprocessing cache and pooled out-of-fold AUC. Eleven
baselines, each trained per fold on the fold's training and inner-validation units and
scored on its held-out units:

- ``mammo``, ``naive-vit``: a 4-block, 64-wide timm ViT on whole 256-px films (64-px
  patches, 16 tokens), film label = the film's own finding, top-bottom flips; a patient's
  score is its most suspicious film.
- ``mammo``, ``film-features``: logistic regression on per-film intensity quantiles,
  local-binary-pattern and grey-level co-occurrence texture (scikit-image), and the largest
  bright blob; a patient is the mean of its films and their left/right difference.
- ``mammo``, ``lesion-windows``: patch-level training around the annotated lesion centres
  (lesion-centred windows against breast windows away from any lesion), then a scan of
  every film; a patient's score is its most lesion-like window. ``lesion-windows-cnn``:
  the same with a convolutional network (timm's ``resnet10t``) in place of the ViT.
- ``mammo``, ``oracle-detection`` and ``oracle-lesion``: not models but references, told
  the truth a model must find. The first knows which patients have a finding (benign or
  malignant): the AUC of a perfect detector. The second also knows where each annotated
  lesion is and learns benign against malignant from statistics of its surroundings: what
  finding and locating every lesion would buy.
- ``histo``, ``tissue-fraction``: nothing learnt, the share of the image that the tissue
  mask (the one tiling uses) calls tissue. Malignant cores and fields are denser, so this
  one number is what a model must beat to have learnt more than how much of the picture
  is tissue.
- ``histo``, ``colour-texture``: logistic regression on each image's mean tile statistics
  (RGB and HSV means and spreads, edge strength, dark-pixel fraction).
- ``histo``, ``tile-vit``: the same timm ViT shape on 64-px tiles (patch 8), every tile
  trained with its image's label; a unit's score is its mean tile logit.
- ``histo``, ``tile-vit-quarter``: the same at a quarter of the resolution (64-px tiles
  overlapping by three quarters, every one with at least a quarter tissue: the recipe's
  preprocessing and cache under :data:`QUARTER_TILES`, so the recipe trained with those
  overrides sees the same tiles): the view of tissue architecture a pathologist takes at
  low power. ``tile-cnn-quarter``: the same tiles and training with timm's ``resnet10t``
  in place of the ViT.

Seed ``s`` makes the folds of ``real_cpu_cv.py --set seed=s`` and seeds the baseline, so
seed 0 sits next to the recipe's table. Output: benchmarks/results/real_baselines.md.

``--group batch`` (H&E only) holds out one staining batch at a time instead: each UCSB scan
date, and BreakHis as a whole (one laboratory; its domains are magnifications of the same
patients). It asks whether a baseline's signal survives a staining batch it never saw, the
domain-generalisation question colour statistics raise. Output:
benchmarks/results/real_baselines_batch.md.

``--scores DIR`` also keeps every unit's out-of-fold score,
``DIR/MODALITY/BASELINE/seed-S.csv`` in the columns of the CV's ``predictions.csv`` (the
score, a logit or any other ranking, as a probability through the logistic function) plus
the raw ``score``, so that ``benchmarks/compare_cv.py`` pairs two baselines, or a baseline
and the recipe trained on that modality alone (``real_cpu_cv.py --modality M``: the joint
recipe's units are pseudo-pairs, with other ids), on the same units.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import timm
import torch
import torch.nn.functional as F
from scipy.special import expit
from scipy.stats import kurtosis, skew
from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from timm.models.vision_transformer import VisionTransformer

from radpath.atomic import atomic_path
from radpath.batch.dataset import PatientBagDataset
from radpath.batch.keys import LABEL_CODES
from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD, tile_tensor
from radpath.batch.units import Unit
from radpath.data.cache import ArrayCache
from radpath.data.histo import tissue_mask
from radpath.data.io import read_image
from radpath.data.manifest import Record
from radpath.data.preprocess import RecordPreprocessor, load_cached
from radpath.engine.config import TrainConfig, load_config
from radpath.evaluation.crossval import cv_manifests
from radpath.evaluation.predict import (
    PATIENT_COLUMNS,
    PREDICTION_COLUMNS,
    PREDICTION_FIELDS,
    patient_ids,
)
from radpath.models.backbone import BACKBONES
from radpath.stats.estimate import Estimate
from radpath.stats.metrics import auc_with_ci

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_data import (
    FOLD_GROUPS,
    MODALITY_SOURCES,
    REPO,
    RESULTS,
    add_group_option,
    check_group,
    real_manifest,
    spread_cells,
)

# Per-image arrays (hand-made statistics) depend on the image alone, not on the fold or
# seed: computed once.
_STATISTICS: dict[tuple[str, str], np.ndarray] = {}
LESION_FEATURES = 25  # length of _lesion_statistics
WINDOW = 64  # side of lesion-windows' windows, in pixels of the cached film
# tile-vit-quarter's preprocessing: every 64-px tile of at least a quarter tissue of the
# image at a quarter of its resolution, overlapping by 3/4 (256 exceeds any image's count).
QUARTER_TILES = ("data.preprocess.histo.scale=0.25", "data.preprocess.histo.stride=16",
                 "data.preprocess.histo.min_tissue=0.25", "data.preprocess.max_tiles=256")


@dataclass
class Fold:
    """The units a baseline trains on and the units it scores, with their pixels."""

    train: list[Unit]
    test: list[Unit]
    pixels: Callable[[Record], np.ndarray]
    seed: int
    lesions: Callable[[Record], np.ndarray]
    quarter_tiles: Callable[[Record], np.ndarray]


def malignant(unit: Unit) -> float:
    return float(unit.label == "malignant")


def statistics(fold: Fold, record: Record, describe: Callable[[np.ndarray], np.ndarray]
               ) -> np.ndarray:
    key = (describe.__name__, record.image_id)
    if key not in _STATISTICS:
        _STATISTICS[key] = describe(fold.pixels(record))
    return _STATISTICS[key]


# ---------------------------------------------------------------- mammography
def naive_vit(fold: Fold, epochs: int = 60) -> np.ndarray:
    films = [(r, float(r.label == "malignant")) for u in fold.train for r in u.mammo]
    images = torch.stack([_film(fold, r) for r, _ in films])
    labels = torch.tensor([y for _, y in films])
    net = _vit(img_size=256, patch_size=64, in_chans=1, seed=fold.seed)
    _fit(net, images, labels, epochs, batch=16, augment=_vflip, seed=fold.seed)
    with torch.no_grad():
        return np.array([float(net(torch.stack([_film(fold, r) for r in u.mammo])).max())
                         for u in fold.test])


def film_features(fold: Fold) -> np.ndarray:
    def unit_row(unit: Unit) -> np.ndarray:
        rows = [statistics(fold, r, _film_statistics) for r in unit.mammo]
        by_side = {r.laterality: row for r, row in zip(unit.mammo, rows, strict=True)}
        asymmetry = (np.abs(by_side["L"] - by_side["R"]) if {"L", "R"} <= by_side.keys()
                     else np.zeros_like(rows[0]))
        return np.concatenate([np.mean(rows, axis=0), asymmetry])

    return _logistic(fold, unit_row)


def oracle_detection(fold: Fold) -> np.ndarray:
    """Told which patients have a finding, nothing else: a perfect detector's AUC."""
    return np.array([float(u.label != "normal") for u in fold.test])


def oracle_lesion(fold: Fold) -> np.ndarray:
    """Told which patients have a finding and where it is: benign against malignant learnt
    from the appearance of the annotated lesions (logistic regression on their surroundings).

    A patient's score is its most malignant-looking lesion; a patient with a finding but no
    coordinates (diffuse calcifications) sits in the middle of the training lesions' scores,
    and a normal patient below every patient with a finding.
    """
    train = [(_lesion_rows(fold, r), r.label == "malignant") for u in fold.train for r in u.mammo]
    features = np.concatenate([rows for rows, _ in train])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    model.fit(features, [label for rows, label in train for _ in rows])
    middle = float(np.median(model.decision_function(features)))
    floor = -1e6

    def score(unit: Unit) -> float:
        found = np.concatenate([_lesion_rows(fold, r) for r in unit.mammo])
        if len(found):
            return float(model.decision_function(found).max())
        return middle if unit.label != "normal" else floor

    return np.array([score(u) for u in fold.test])


def lesion_windows(fold: Fold) -> np.ndarray:
    """Patch-level training around the lesion centres, then a scan of every film.

    The ViT of ``naive-vit`` on 64-px windows (patch 8) learns windows centred on an
    annotated lesion (moved by up to half its radius, ``copies`` times each) against as
    many windows of breast away from every lesion, then scores each breast window of a
    film (``stride`` px apart); a film's score is its most lesion-like window, a patient's
    its most suspicious film. The detector the oracle rows assume, learnt from the data.
    """
    return _lesion_detector(fold, _vit(img_size=WINDOW, patch_size=8, in_chans=1,
                                       seed=fold.seed))


def lesion_windows_cnn(fold: Fold) -> np.ndarray:
    """``lesion-windows`` with a convolutional network in place of the ViT: timm's
    ``resnet10t`` from scratch, one grey channel. Convolutions share their weights across
    positions and see neighbourhoods from the first layer, the prior a ViT must learn from
    data; this row asks whether that prior finds MIAS lesions from 54 training patients."""
    return _lesion_detector(fold, _cnn(in_chans=1, seed=fold.seed))


def _lesion_detector(fold: Fold, net: torch.nn.Module, epochs: int = 30, copies: int = 8,
                     stride: int = 16) -> np.ndarray:
    generator = np.random.default_rng(fold.seed)
    drawn = [_training_windows(fold, r, copies, generator) for u in fold.train for r in u.mammo]
    images = _standardised(np.concatenate([w for w, _ in drawn]))
    labels = torch.from_numpy(np.concatenate([y for _, y in drawn]))
    _fit(net, images, labels, epochs, batch=32, augment=_dihedral, seed=fold.seed)
    with torch.no_grad():
        return np.array([max(float(net(_scan(fold.pixels(r), stride)).max()) for r in u.mammo)
                         for u in fold.test])


def _training_windows(fold: Fold, record: Record, copies: int, generator: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Lesion-centred windows (label 1) and as many breast windows away from lesions (0)."""
    image = np.asarray(fold.pixels(record), dtype=np.float32)
    circles = fold.lesions(record)
    centres = [(x + dx, y + dy) for x, y, r in circles
               for dx, dy in generator.uniform(-1, 1, (copies, 2)) * max(r / 2, 4)]
    lesion_count = len(centres)
    rows, cols = np.nonzero(_breast(image))
    while len(centres) < 2 * lesion_count or len(centres) < copies:
        i = generator.integers(len(rows))
        x, y = cols[i], rows[i]
        if not len(circles) or (np.hypot(circles[:, 0] - x, circles[:, 1] - y)
                                > circles[:, 2] + WINDOW / 2).all():
            centres.append((x, y))
    padded = np.pad(image, WINDOW)
    windows = [padded[round(y) + WINDOW // 2:round(y) + 3 * WINDOW // 2,
                      round(x) + WINDOW // 2:round(x) + 3 * WINDOW // 2] for x, y in centres]
    labels = (np.arange(len(centres)) < lesion_count).astype(np.float32)
    return np.stack(windows), labels


def _scan(image: np.ndarray, stride: int) -> torch.Tensor:
    """The windows of a film centred on breast pixels ``stride`` apart, standardised."""
    image = np.asarray(image, dtype=np.float32)
    breast = _breast(image)
    padded = np.pad(image, WINDOW // 2)
    windows = [padded[y:y + WINDOW, x:x + WINDOW]
               for y in range(0, image.shape[0], stride) for x in range(0, image.shape[1], stride)
               if breast[y, x]]
    return _standardised(np.stack(windows))


def _breast(image: np.ndarray) -> np.ndarray:
    """Pixels of breast: smoothed so that dark fat inside the breast still counts."""
    return cv2.blur(image, (15, 15)) > 0.1


def _standardised(windows: np.ndarray) -> torch.Tensor:
    return ((torch.from_numpy(windows) - MAMMO_MEAN) / MAMMO_STD)[:, None]


def _lesion_rows(fold: Fold, record: Record) -> np.ndarray:
    """``(K, F)`` statistics of a film's K lesions, read and computed once per film."""
    key = ("lesions", record.image_id)
    if key not in _STATISTICS:
        image = fold.pixels(record)
        rows = [_lesion_statistics(image, circle) for circle in fold.lesions(record)]
        _STATISTICS[key] = np.stack(rows) if rows else np.zeros((0, LESION_FEATURES))
    return _STATISTICS[key]


def _lesion_statistics(image: np.ndarray, circle: np.ndarray, side: int = 32) -> np.ndarray:
    """Intensity, texture and spiculation of the square of three radii around a lesion."""
    x, y, r = circle
    half = max(round(1.5 * r), 8)
    padded = np.pad(image, half)
    row, col = round(y), round(x)
    roi = cv2.resize(padded[row:row + 2 * half, col:col + 2 * half].astype(np.float32),
                     (side, side), interpolation=cv2.INTER_AREA)
    grey = (np.clip(roi, 0, 1) * 255).astype(np.uint8)
    centre = roi[side // 3:-side // 3, side // 3:-side // 3]
    lbp = local_binary_pattern(grey, 8, 1, "uniform").astype(int).ravel()
    cooc = graycomatrix(grey // 16, [1, 3], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                        levels=16, normed=True)
    gx, gy = cv2.Sobel(roi, cv2.CV_32F, 1, 0), cv2.Sobel(roi, cv2.CV_32F, 0, 1)
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    magnitude = np.hypot(gx, gy) + 1e-6
    # Spiculated (malignant-looking) margins have edges pointing at the centre.
    radial = np.abs(gx * xx + gy * yy) / np.hypot(xx, yy) / magnitude
    return np.concatenate([
        np.quantile(roi, [0.05, 0.25, 0.5, 0.75, 0.95]), [roi.std()],
        [centre.mean() - roi.mean(), centre.std(), r / image.shape[0]],
        np.bincount(lbp, minlength=10)[:10] / len(lbp),
        [graycoprops(cooc, p).mean() for p in ("contrast", "homogeneity", "energy",
                                               "correlation")],
        [magnitude.mean(), float((radial * magnitude).sum() / magnitude.sum())],
    ])


def _film(fold: Fold, record: Record) -> torch.Tensor:
    return _standardised(np.asarray(fold.pixels(record), dtype=np.float32)[None])[0]


def _film_statistics(image: np.ndarray) -> np.ndarray:
    breast = image > 0.02
    values = image[breast]
    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    lbp = local_binary_pattern(grey, 8, 1, "uniform")[breast].astype(int)
    cooc = graycomatrix(grey // 16, [1, 4, 16], [0, np.pi / 2], levels=16, normed=True)
    side = image.shape[0] // 16 * 16
    cells = image[:side, :side].reshape(side // 16, 16, side // 16, 16).mean((1, 3))
    tissue = cells[cells > 0.02]
    return np.concatenate([
        np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9, 0.99]),
        [values.std(), skew(values), kurtosis(values), breast.mean()],
        np.bincount(lbp, minlength=10)[:10] / len(lbp),
        *(graycoprops(cooc, p).ravel() for p in ("contrast", "homogeneity", "energy",
                                                  "correlation")),
        [tissue.max() - np.median(tissue), np.quantile(tissue, 0.95) - np.median(tissue)],
    ])


# ---------------------------------------------------------------- histology
def colour_texture(fold: Fold) -> np.ndarray:
    return _logistic(fold, lambda u: np.mean([statistics(fold, r, _tile_statistics)
                                              for r in u.histo], axis=0))


def tile_vit(fold: Fold) -> np.ndarray:
    return _tile_classifier(fold, lambda r: _tiles(fold, r), epochs=10,
                            net=_tile_vit(fold.seed))


def tile_vit_quarter(fold: Fold) -> np.ndarray:
    """The tile ViT at a quarter of the resolution (a 64-px tile spans 256 source pixels:
    tissue architecture rather than nuclei), on every overlapping tile of the image."""
    return _tile_classifier(fold, lambda r: tile_tensor(fold.quarter_tiles(r)), epochs=30,
                            net=_tile_vit(fold.seed))


def tile_cnn_quarter(fold: Fold) -> np.ndarray:
    """``tile-vit-quarter`` with timm's ``resnet10t`` in place of the ViT: whether a
    convolutional prior, which the recipe's patch-local stem only begins to give, is what
    holds a from-scratch model of these 49 units back."""
    return _tile_classifier(fold, lambda r: tile_tensor(fold.quarter_tiles(r)), epochs=30,
                            net=_cnn(in_chans=3, seed=fold.seed))


def _tile_classifier(fold: Fold, tiles_of: Callable[[Record], torch.Tensor], epochs: int, *,
                     net: torch.nn.Module) -> np.ndarray:
    """Every tile trained with its image's label; a unit scored by its mean tile logit."""
    images = [(tiles_of(r), malignant(u)) for u in fold.train for r in u.histo]
    tiles = torch.cat([t for t, _ in images])
    labels = torch.cat([torch.full((len(t),), y) for t, y in images])
    _fit(net, tiles, labels, epochs, batch=64, augment=_dihedral, seed=fold.seed)
    with torch.no_grad():
        return np.array([float(torch.cat([net(tiles_of(r)) for r in u.histo]).mean())
                         for u in fold.test])


def tissue_fraction(fold: Fold) -> np.ndarray:
    """Nothing learnt: the share of a unit's image area that the tissue mask tiling uses
    calls tissue (the mean over its images). Malignant fields are denser."""
    return np.array([np.mean([tissue_share(r) for r in u.histo]) for u in fold.test])


def tissue_share(record: Record) -> float:
    """The share of ``record``'s image that :func:`radpath.data.histo.tissue_mask` calls
    tissue (memoised per image)."""
    key = ("tissue", record.image_id)
    if key not in _STATISTICS:
        _STATISTICS[key] = np.array(tissue_mask(read_image(record.path).pixels).mean())
    return float(_STATISTICS[key])


def _tiles(fold: Fold, record: Record) -> torch.Tensor:
    return tile_tensor(fold.pixels(record))


def _tile_statistics(tiles: np.ndarray) -> np.ndarray:
    rgb = tiles.astype(np.float32) / 255
    hsv = np.stack([cv2.cvtColor(t, cv2.COLOR_RGB2HSV) for t in tiles]).astype(np.float32)
    hsv /= np.array([180, 255, 255], dtype=np.float32)
    grey = rgb.mean(-1)
    edges = [np.abs(np.diff(grey, axis=a)).mean((1, 2)) for a in (1, 2)]
    per_tile = np.concatenate([rgb.mean((1, 2)), rgb.std((1, 2)), hsv.mean((1, 2)),
                               hsv.std((1, 2)), np.stack(edges, 1),
                               (grey < 0.4).mean((1, 2))[:, None]], axis=1)
    return per_tile.mean(0)


# ---------------------------------------------------------------- shared pieces
def _logistic(fold: Fold, row: Callable[[Unit], np.ndarray]) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000))
    model.fit(np.stack([row(u) for u in fold.train]), [malignant(u) for u in fold.train])
    return model.decision_function(np.stack([row(u) for u in fold.test]))


def _vit(*, img_size: int, patch_size: int, in_chans: int, seed: int) -> VisionTransformer:
    """A bare timm ViT of radpath's ``vit_micro`` shape (``model.backbone.name=vit_micro``
    trains the recipe at the same size)."""
    torch.manual_seed(seed)
    shape = {**BACKBONES.get("vit_micro")(), "patch_size": patch_size}
    return VisionTransformer(img_size=img_size, in_chans=in_chans, num_classes=1, **shape)


def _tile_vit(seed: int) -> VisionTransformer:
    """The tile baselines' ViT: 64-px RGB tiles in 8-px patches."""
    return _vit(img_size=64, patch_size=8, in_chans=3, seed=seed)


def _cnn(*, in_chans: int, seed: int) -> torch.nn.Module:
    """timm's ``resnet10t`` from scratch, seeded as :func:`_vit` is."""
    torch.manual_seed(seed)
    return timm.create_model("resnet10t", in_chans=in_chans, num_classes=1)


def _fit(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, *,
         batch: int, augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
         seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.05)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            rows = order[start:start + batch]
            logits = net(augment(images[rows], generator))[:, 0]
            loss = F.binary_cross_entropy_with_logits(logits, labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    net.eval()


def _vflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-2), images)


def _dihedral(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    turns = int(torch.randint(4, (1,), generator=generator))
    images = torch.rot90(images, turns, dims=(-2, -1))
    return images.flip(-1) if torch.rand(1, generator=generator) < 0.5 else images


FOLDS_TEXT = {
    "patient": "3 patient-grouped folds (seed s gives the folds of "
               "`benchmarks/real_cpu_cv.py --modality M --set seed=s`)",
    "batch": "8 folds, each holding out one H&E staining batch (7 UCSB scan dates, BreakHis); "
             "the seed seeds the baseline only",
}
BASELINES = {"mammo": {"naive-vit": naive_vit, "film-features": film_features,
                       "lesion-windows": lesion_windows, "lesion-windows-cnn": lesion_windows_cnn,
                       "oracle-detection": oracle_detection,
                       "oracle-lesion": oracle_lesion},
             "histo": {"tissue-fraction": tissue_fraction, "colour-texture": colour_texture,
                       "tile-vit": tile_vit, "tile-vit-quarter": tile_vit_quarter,
                       "tile-cnn-quarter": tile_cnn_quarter}}


# ---------------------------------------------------------------- protocol
def folds_of(config: TrainConfig, quarter: TrainConfig, modality: str, work: Path, seed: int,
             by: str = "patient") -> list[Fold]:
    """The folds ``real_cpu_cv.py --modality MODALITY --set seed=SEED [--group batch]``
    trains on (its training and inner-validation units are a baseline's training units);
    ``quarter`` is ``config`` under :data:`QUARTER_TILES`."""
    pixels, lesions = pixel_reader(config), lesion_reader(config)
    quarter_tiles = raster_tiles(quarter)
    manifest = real_manifest(work, MODALITY_SOURCES[modality])
    folds = []
    for _, fold in cv_manifests(manifest, 3, seed=seed, group_of=FOLD_GROUPS[by]):
        units = {split: PatientBagDataset(fold, config.data, split=split).units
                 for split in ("train", "val", "test")}
        # In unit order, so that how the recipe splits off its inner validation units
        # (which baselines train on too) cannot reorder, and so change, a baseline's batches.
        train = sorted(units["train"] + units["val"], key=lambda unit: unit.unit_id)
        folds.append(Fold(train, units["test"], pixels, seed, lesions, quarter_tiles))
    return folds


def pixel_reader(config: TrainConfig) -> Callable[[Record], np.ndarray]:
    """A record's preprocessed pixels, from the recipe's cache."""
    arrays = _array_reader(config)
    return lambda record: arrays(record)["image"]


def raster_tiles(config: TrainConfig) -> Callable[[Record], np.ndarray]:
    """An H&E record's cached tiles in raster order (rows, then columns), the order tiling
    yields them, rather than the cache's richest-first: the order decides which tiles share
    a baseline's shuffled batches, so it is kept apart from how the cache ranks tiles."""
    arrays = _array_reader(config)

    def ordered(record: Record) -> np.ndarray:
        found = arrays(record)
        x, y = found["tile_xy"][:, 0], found["tile_xy"][:, 1]
        return found["image"][np.lexsort((x, y))]

    return ordered


def lesion_reader(config: TrainConfig) -> Callable[[Record], np.ndarray]:
    """A film's lesion circles ``(K, 3)``, x, y, r in the cached image's pixels."""
    arrays = _array_reader(config)

    def inside(record: Record) -> np.ndarray:
        found = arrays(record)
        circles, side = found.get("lesions", np.zeros((0, 3))), found["image"].shape[0]
        # Cropping to the breast can leave a (rare) annotated centre outside the image.
        return circles[((circles[:, :2] >= 0) & (circles[:, :2] < side)).all(axis=1)]

    return inside


def _array_reader(config: TrainConfig) -> Callable[[Record], dict[str, np.ndarray]]:
    cache = ArrayCache(config.data.cache_dir)
    preprocessor = RecordPreprocessor(config.data.preprocess)
    return lambda record: load_cached(record, cache, preprocessor)


@dataclass
class Scored:
    """One held-out unit's out-of-fold score."""

    fold: int
    unit: Unit
    score: float


def out_of_fold(folds: list[Fold], baseline: Callable[[Fold], np.ndarray]) -> list[Scored]:
    """Every fold's held-out units, scored by the baseline trained on that fold."""
    return [Scored(number, unit, float(score))
            for number, fold in enumerate(folds, start=1)
            for unit, score in zip(fold.test, baseline(fold), strict=True)]


def pooled_auc(scored: list[Scored]) -> Estimate:
    """AUC of the out-of-fold scores of every fold, pooled."""
    return auc_with_ci(np.array([malignant(s.unit) for s in scored]),
                       np.array([s.score for s in scored]))


def write_scores(path: Path, modality: str, scored: list[Scored]) -> None:
    """The scores in the columns of the CV's ``predictions.csv``, atomically: the score
    through the logistic function as the modality's probability (in full, so that scores
    up to about 36 in size stay apart), the other outputs empty, the unit's patients
    (as the joint CV writes them, so ``compare_cv.py --key histo_patients`` pairs the two),
    and the raw score."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*PREDICTION_FIELDS, "score"])
        for s in scored:
            probability = repr(float(expit(s.score)))
            outputs = [probability if output == modality else ""
                       for output in PREDICTION_COLUMNS]
            patients = [patient_ids(getattr(s.unit, m)) for m in PATIENT_COLUMNS]
            writer.writerow([s.unit.unit_id, f"fold-{s.fold}", LABEL_CODES[s.unit.label],
                             *outputs, *patients, repr(s.score)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/radpath-cv"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--modality", choices=tuple(BASELINES), action="append")
    add_group_option(parser)
    parser.add_argument("--baseline", action="append",
                        choices=[name for names in BASELINES.values() for name in names],
                        help="run only these baselines (default: every one of the modality)")
    parser.add_argument("--table", type=Path, help="write the table here (default: "
                        "benchmarks/results/real_baselines[_batch].md; needed with --baseline)")
    parser.add_argument("--scores", type=Path, help="keep every unit's out-of-fold score "
                        "in DIR/MODALITY/BASELINE/seed-S.csv (benchmarks/compare_cv.py "
                        "pairs them)")
    args = parser.parse_args()
    if args.baseline and not args.table:
        parser.error("--baseline runs some baselines only: give --table FILE, so that the "
                     "full table in benchmarks/results is not replaced by their rows")
    modalities = args.modality or (("histo",) if args.group == "batch" else tuple(BASELINES))
    suffix = check_group(parser, args.group, modalities)
    recipe, cache = REPO / "configs" / "real-cpu.yaml", f"data.cache_dir={args.work / 'cache'}"
    config = load_config(recipe, [cache])
    quarter = load_config(recipe, [cache, *QUARTER_TILES])
    started = time.perf_counter()
    lines = ["| modality | baseline | seed 0: pooled AUC [95% CI] | "
             f"mean ± sd over {args.seeds} seed{'s' * (args.seeds > 1)} | per seed |",
             "|---|---|---|---|---|"]
    for modality in modalities:
        folds = {s: folds_of(config, quarter, modality, args.work, s, args.group)
                 for s in range(args.seeds)}
        for name, baseline in BASELINES[modality].items():
            if args.baseline and name not in args.baseline:
                continue
            estimates = []
            for seed in range(args.seeds):
                scored = out_of_fold(folds[seed], baseline)
                if args.scores:  # as each seed ends: long baselines lose no finished seed
                    write_scores(args.scores / modality / name / f"seed-{seed}.csv",
                                 modality, scored)
                estimates.append(pooled_auc(scored))
                print(f"{modality} {name} seed {seed}: {estimates[-1]}", flush=True)
            lines.append(f"| {modality} | {name} | {estimates[0]} | "
                         f"{spread_cells([e.value for e in estimates])} |")
            print(lines[-1], flush=True)
    minutes = (time.perf_counter() - started) / 60
    command = " ".join(shlex.quote(a) for a in [".venv/bin/python", *sys.argv])
    text = "\n".join([
        "# Reference baselines on the real-cpu folds" + (
            ", one staining batch held out at a time" if args.group == "batch" else ""), "",
        f"Made by `{command}` in {minutes:.0f} min on {torch.get_num_threads()} CPU threads. "
        "AUC of malignancy (malignant vs rest) per unit, out-of-fold predictions pooled over "
        f"{FOLDS_TEXT[args.group]}, 95% bootstrap CI; one modality at a time, so no pairs. "
        "The preprocessing of configs/real-cpu.yaml (the same cache).", "", *lines, ""])
    table = args.table or RESULTS / f"real_baselines{suffix}.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(table) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
