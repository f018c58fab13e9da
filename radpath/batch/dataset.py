"""Patient bags: manifest units to the tensors of :mod:`radpath.batch.keys`.

A *unit* is a true pair or a pseudo-pair (records sharing a ``pair_id``), or else one
patient. Each unit becomes one dataset item: its mammogram views (at most ``max_views``)
and a bag of H&E tiles pooled over all its histology images (``max_tiles`` drawn per
training epoch, ``eval_tiles`` when predicting).
Items hold variable numbers of views and tiles;
:func:`~radpath.batch.collate.collate_patients` pads them.

Arrays come from the preprocessing cache (computed on a miss). Tensors are normalised as
:mod:`radpath.batch.tensors` says (H&E tiles after augmentation).

Training draws (tile subsets, augmentation) come from ``np.random.default_rng((seed,
epoch, index))``, so an item depends on the seed, the epoch and its index only, never on
the worker that loads it. The epoch comes with the key, ``dataset[(epoch, index)]``, as the
training loaders' :class:`~radpath.batch.sampler.EpochTagged` sampler gives it, so that
persistent workers need not be told; a plain index takes the epoch of
:meth:`PatientBagDataset.set_epoch`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydantic
import torch
from torch.utils.data import Dataset

from radpath.batch.keys import LABEL_CODES, MALIGNANT, PAIRING_CODES, SIDE_CODES
from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD, lesion_map, tile_tensor
from radpath.batch.units import Unit, build_units, interleave_ranks
from radpath.data.cache import ArrayCache, ArrayMemory
from radpath.data.histo import hed_jitter
from radpath.data.manifest import MODALITIES, Manifest, Record
from radpath.data.pairing import pairing_mode as _records_pairing_mode
from radpath.data.preprocess import PreprocessConfig, RecordPreprocessor, load_cached


class DataConfig(pydantic.BaseModel):
    """How units become tensors.

    Attributes:
        preprocess: the preprocessing whose cached arrays are read.
        cache_dir: the preprocessing cache folder.
        max_views: mammogram views kept per unit (the first in a stable order).
        max_tiles: H&E tiles per training unit (a random subset of the cached tiles).
        eval_tiles: H&E tiles per evaluation unit, the first in rank order; ``None`` keeps
            every cached tile. A unit's prediction should see all of its tissue, while
            training only needs a fresh subset each epoch.
        patch_size: the ViT patch size; lesion maps are on the ``size // patch_size`` grid.
            In a training config it defaults to the backbone's, and must equal it.
        augment: augment training items (never evaluation items).
        hed_sigma: HED jitter scale half-width for the tiles.
        hed_bias: HED jitter shift half-width for the tiles.
        flip: random flips and quarter turns of the tiles (H&E has no orientation;
            mammograms are never flipped: their canonical laterality matters).
        mammo_gamma: range of the random mammogram gamma (drawn log-uniformly).
        mammo_noise: standard deviation of the Gaussian noise added to mammograms.
        mammo_shift: largest random translation of a training mammogram, as a fraction of
            its side, in whole patches (the lesion map moves with it; the image is padded
            with background). Small cohorts let a model memorise where each training
            lesion sits; moving it defeats that, and with ``model.mammo_window`` it also
            moves lesions across window borders.
        mammo_vflip: flip training mammograms top to bottom with probability 0.5 (never
            left to right: the canonical laterality matters).
        num_workers: DataLoader worker processes, started once per loader and kept
            (with their in-memory caches) from epoch to epoch; 0 loads in the main process.
            The numbers do not depend on it.
        memory_cache_mb: cache entries kept in memory once read, per process (each
            DataLoader worker holds its own), so that later epochs skip the disk; 0 keeps
            none. The real data of ``configs/real-cpu.yaml`` needs about 60 MiB.
        batch_size: units per batch.
        grade_column: the record field holding the ordinal grade.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    preprocess: PreprocessConfig = PreprocessConfig()
    cache_dir: str = ".radpath-cache"
    max_views: int = pydantic.Field(4, ge=1)
    max_tiles: int = pydantic.Field(8, ge=1)
    eval_tiles: int | None = pydantic.Field(None, ge=1)
    patch_size: int = pydantic.Field(16, ge=1)
    augment: bool = True
    hed_sigma: float = pydantic.Field(0.03, ge=0.0)
    hed_bias: float = pydantic.Field(0.03, ge=0.0)
    flip: bool = True
    mammo_gamma: tuple[float, float] = (0.8, 1.25)
    mammo_noise: float = pydantic.Field(0.01, ge=0.0)
    mammo_shift: float = pydantic.Field(0.0, ge=0.0, lt=0.5)
    mammo_vflip: bool = False
    num_workers: int = pydantic.Field(0, ge=0)
    memory_cache_mb: int = pydantic.Field(512, ge=0)
    batch_size: int = pydantic.Field(8, ge=1)
    grade_column: str = "grade"

    @pydantic.model_validator(mode="after")
    def _check(self) -> DataConfig:
        low, high = self.mammo_gamma
        if not 0 < low <= high:
            raise ValueError(f"mammo_gamma must satisfy 0 < low <= high, got {self.mammo_gamma}")
        size = self.preprocess.mammo.size
        if size % self.patch_size:
            raise ValueError(f"preprocess.mammo.size ({size}) must be a multiple of "
                             f"patch_size ({self.patch_size})")
        return self



def _augment_mammo(image: np.ndarray, rng: np.random.Generator,
                   config: DataConfig) -> np.ndarray:
    low, high = config.mammo_gamma
    gamma = math.exp(rng.uniform(math.log(low), math.log(high)))
    out = np.power(np.clip(image, 0.0, 1.0), gamma)
    if config.mammo_noise > 0:
        out = out + rng.normal(0.0, config.mammo_noise, out.shape)
    return np.clip(out, 0.0, 1.0)


def _move_mammo(image: np.ndarray, lesions: np.ndarray, rng: np.random.Generator,
                config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """A random whole-patch translation and top-bottom flip of an image and its lesions."""
    size, patch = image.shape[0], config.patch_size
    lesions = np.array(lesions, dtype=np.float64).reshape(-1, 3)
    if config.mammo_vflip and rng.random() < 0.5:
        image = image[::-1]
        lesions[:, 1] = size - lesions[:, 1]
    cells = int(config.mammo_shift * size) // patch
    if cells:
        dy, dx = (int(v) * patch for v in rng.integers(-cells, cells + 1, size=2))
        moved = np.zeros_like(image)
        rows, cols = slice(max(dy, 0), size + min(dy, 0)), slice(max(dx, 0), size + min(dx, 0))
        moved[rows, cols] = image[max(-dy, 0):size - max(dy, 0), max(-dx, 0):size - max(dx, 0)]
        image = moved
        lesions[:, 0] += dx
        lesions[:, 1] += dy
    return np.ascontiguousarray(image), lesions


def _augment_tile(tile: np.ndarray, rng: np.random.Generator, config: DataConfig) -> np.ndarray:
    if config.hed_sigma > 0 or config.hed_bias > 0:
        tile = hed_jitter(tile, rng, sigma=config.hed_sigma, bias=config.hed_bias)
    if config.flip:
        tile = np.rot90(tile, int(rng.integers(4)))
        if rng.random() < 0.5:
            tile = tile[:, ::-1]
    return tile


class PatientBagDataset(Dataset):
    """One item per unit: variable-length views and tiles, padded by
    :func:`~radpath.batch.collate.collate_patients`.

    Args:
        manifest: the records (with pairing columns; unpaired records are single patients).
        config: how to build the tensors.
        split: keep only records of this split; ``None`` keeps all.
        train: sample tile subsets at random and augment (if ``config.augment``).
        seed: seed of the training draws.
        domains: the domain vocabulary; defaults to the sorted domains of the kept records.
            Pass the training set's vocabulary to validation and test sets; domains outside
            it (and empty domains) map to -1.

    Attributes:
        units: the units, in order of first appearance.
        labels: label code per unit (:data:`radpath.batch.keys.LABEL_CODES`).
        modality_domains: per unit ``{modality: domain}`` for each modality it holds, for
            balanced sampling.
        num_grades: the highest grade + 1, or 0 when no unit has a grade.
    """

    def __init__(self, manifest: Manifest, config: DataConfig, *, split: str | None = None,
                 train: bool = False, seed: int = 0,
                 domains: Sequence[str] | None = None) -> None:
        self.config = config
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.records = [r.with_(path=str(manifest.resolve_path(r))) for r in manifest
                        if split is None or r.split == split]
        if domains is None:
            domains = sorted({r.domain for r in self.records if r.domain})
        self.domains = tuple(domains)
        self._domain_index = {name: i for i, name in enumerate(self.domains)}
        self.units = build_units(self.records, max_views=config.max_views,
                                 grade_column=config.grade_column)
        self.labels = np.array([LABEL_CODES[u.label] for u in self.units], dtype=np.int64)
        self.modality_domains = [
            {m: getattr(u, f"{m}_domain") for m in MODALITIES if getattr(u, m)}
            for u in self.units]
        self.num_grades = max((u.grade for u in self.units), default=-1) + 1
        self._worker: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # The preprocessor and cache are per process: rebuilt lazily after unpickling.
        return {**self.__dict__, "_worker": {}}

    def __len__(self) -> int:
        return len(self.units)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose tile draws and augmentations the items use."""
        self.epoch = int(epoch)

    def domain_index(self, name: str) -> int:
        """The domain's index in the vocabulary, or -1."""
        return self._domain_index.get(name, -1)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        unit = self.units[index]
        augment = self.train and self.config.augment
        rng = np.random.default_rng((self.seed, epoch, index)) if self.train else None
        mammo, maps, known = self._mammo(unit, rng if augment else None)
        side = [SIDE_CODES.get(str(r.laterality).upper(), -1) for r in unit.mammo]
        view_label = [LABEL_CODES[r.label] for r in unit.mammo]
        histo = self._histo(unit, rng, augment)
        code = LABEL_CODES[unit.label]
        return {
            "unit_id": unit.unit_id,
            "mammo": mammo, "lesion_map": maps, "lesion_known": known, "histo": histo,
            "mammo_side": torch.tensor(side, dtype=torch.long),
            "mammo_view_label": torch.tensor(view_label, dtype=torch.long),
            "has_mammo": torch.tensor(len(mammo) > 0), "has_histo": torch.tensor(len(histo) > 0),
            "label": torch.tensor(code, dtype=torch.long),
            "malignant": torch.tensor(float(code == MALIGNANT)),
            "grade": torch.tensor(unit.grade, dtype=torch.long),
            "mammo_domain": torch.tensor(self._domain_or_absent(unit.mammo_domain, unit.mammo)),
            "histo_domain": torch.tensor(self._domain_or_absent(unit.histo_domain, unit.histo)),
            "pairing": torch.tensor(PAIRING_CODES[unit.pairing], dtype=torch.long),
        }

    def _domain_or_absent(self, name: str, records: Sequence[Record]) -> int:
        return self.domain_index(name) if records else -1

    def _load(self, record: Record) -> dict[str, np.ndarray]:
        if not self._worker:
            self._worker = {"cache": ArrayCache(self.config.cache_dir),
                            "pre": RecordPreprocessor(self.config.preprocess),
                            "memory": ArrayMemory(self.config.memory_cache_mb << 20)}
        return load_cached(record, self._worker["cache"], self._worker["pre"],
                           self._worker["memory"])

    def _mammo(self, unit: Unit, rng: np.random.Generator | None,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size, patch = self.config.preprocess.mammo.size, self.config.patch_size
        images, maps, known = [], [], []
        for record in unit.mammo:
            arrays = self._load(record)
            image = arrays["image"].astype(np.float32)
            lesions = arrays.get("lesions", np.zeros((0, 3)))
            if rng is not None:
                image, lesions = _move_mammo(image, lesions, rng, self.config)
                image = _augment_mammo(image, rng, self.config)
            images.append((image - MAMMO_MEAN) / MAMMO_STD)
            maps.append(lesion_map(lesions, size, patch))
            known.append(bool(record.lesions) or record.label == "normal")
        grid = size // patch
        return (torch.from_numpy(np.stack(images)[:, None].astype(np.float32)) if images
                else torch.zeros(0, 1, size, size),
                torch.from_numpy(np.stack(maps)) if maps else torch.zeros(0, grid, grid),
                torch.tensor(known, dtype=torch.bool))

    def _histo(self, unit: Unit, rng: np.random.Generator | None,
               augment: bool) -> torch.Tensor:
        tile = self.config.preprocess.histo.tile_size
        if not unit.histo:
            return torch.zeros(0, 3, tile, tile)
        tiles = np.stack(interleave_ranks([self._load(r)["image"] for r in unit.histo]))
        if rng is None:
            tiles = tiles[:self.config.eval_tiles]
        elif len(tiles) > self.config.max_tiles:
            keep = rng.choice(len(tiles), size=self.config.max_tiles, replace=False)
            tiles = tiles[np.sort(keep)]
        if augment and rng is not None:
            tiles = np.stack([_augment_tile(t, rng, self.config) for t in tiles])
        return tile_tensor(tiles)


def unit_table(dataset: PatientBagDataset) -> list[dict[str, Any]]:
    """Light metadata per unit, for samplers and evaluation (no image is read)."""
    return [{"unit_id": u.unit_id, "label": LABEL_CODES[u.label],
             "mammo_domain": u.mammo_domain, "histo_domain": u.histo_domain,
             "pairing": u.pairing, "has_mammo": bool(u.mammo), "has_histo": bool(u.histo),
             "patient_ids": list(u.patient_ids)} for u in dataset.units]


def pairing_mode(dataset: PatientBagDataset) -> str:
    """The pairing the dataset's records use: ``true``, ``pseudo``, ``mixed`` or ``none``."""
    return _records_pairing_mode(Manifest(dataset.records))
