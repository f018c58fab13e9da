"""From a manifest record to model-ready arrays, with the cache in front.

Mammograms go through :class:`~radpath.data.mammo.MammoPreprocessor` (segmentation, crop,
laterality flip, intensity normalisation, resize); H&E images are stain-normalised as a
whole (a whole image gives Macenko more pixels to estimate stains from than one tile), then
tiled, keeping tiles with enough tissue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from radpath.data.cache import ArrayCache, ArrayMemory
from radpath.data.histo import HistoConfig, StainNormalizer, most_tissue_rich, tile_image
from radpath.data.io import ImageData, read_image
from radpath.data.mammo import Geometry, MammoConfig, MammoPreprocessor
from radpath.data.manifest import Lesion, Manifest, Record
from radpath.errors import ConfigError, RadpathError
from radpath.parallel import parallel_map

# Bumped whenever the same config makes different arrays (2: tied H&E tiles spread out).
CACHE_FORMAT = "radpath-preprocess-2"


class PreprocessConfig(BaseModel):
    """Everything that decides the preprocessed arrays; part of every cache key.

    Attributes:
        stain_reference: an H&E image whose stains every tile is mapped to; ``None`` uses
            torchstain's built-in reference stain vectors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mammo: MammoConfig = MammoConfig()
    histo: HistoConfig = HistoConfig()
    stain_reference: str | None = None
    max_tiles: int = Field(64, description="H&E tiles cached per image: the richest "
                           "in tissue (a tile-free image keeps its single richest tile)")


@dataclass(frozen=True)
class Preprocessed:
    """A preprocessed image.

    Attributes:
        image: mammo: float32 (S, S) in [0, 1]; histo: uint8 tiles (N, T, T, 3).
        lesions: lesion circles in output pixels (mammo).
        geometry: mapping between output and original pixels (mammo).
        tile_xy: top-left corners of the tiles in original pixels (histo).
        stain_normalised: False when the image fell back to its raw stains.
        note: why it fell back, when it did.
    """

    modality: str
    image: np.ndarray
    lesions: tuple[Lesion, ...] = ()
    geometry: Geometry | None = None
    tile_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))
    stain_normalised: bool = True
    note: str = ""


class RecordPreprocessor:
    """Preprocesses records of either modality under one :class:`PreprocessConfig`."""

    def __init__(self, config: PreprocessConfig | None = None) -> None:
        self.config = config or PreprocessConfig()
        self.mammo = MammoPreprocessor(self.config.mammo).fit()
        self.stain = stain_normalizer(self.config)

    def __call__(self, record: Record, path: str | Path | None = None) -> Preprocessed:
        return self.from_image(read_image(path or record.path), record)

    def from_image(self, image: ImageData, record: Record) -> Preprocessed:
        """Preprocess an image already decoded (ingest checks each file this way)."""
        if record.modality == "mammo":
            return self._mammo(image.pixels, image.kind, record)
        return self._histo(image.pixels, image.kind, record)

    def _mammo(self, pixels: np.ndarray, kind: str, record: Record) -> Preprocessed:
        grey = pixels[..., 0].astype(np.float32) / 255.0 if kind == "rgb" else pixels
        result = self.mammo.transform(grey, laterality=record.laterality, lesions=record.lesions)
        return Preprocessed("mammo", result.image, result.lesions, result.geometry)

    def _histo(self, pixels: np.ndarray, kind: str, record: Record) -> Preprocessed:
        if kind != "rgb":
            raise RadpathError(f"{record.path}: expected an RGB H&E image, got greyscale")
        stained = self.stain.transform(pixels)
        cfg = self.config.histo
        image = stained.image
        if cfg.scale != 1.0:
            image = cv2.resize(image, None, fx=cfg.scale, fy=cfg.scale,
                               interpolation=cv2.INTER_AREA)
        tiles = tile_image(image, tile_size=cfg.tile_size, stride=cfg.stride,
                           min_tissue=cfg.min_tissue)
        count = self.config.max_tiles
        if not tiles:  # keep the image usable: the single most tissue-rich tile
            tiles, count = tile_image(image, tile_size=cfg.tile_size, stride=cfg.stride,
                                      min_tissue=0.0), 1
        tiles = most_tissue_rich(tiles, count)
        stack = np.stack([t.image for t in tiles])
        # Corners in original pixels, whatever the scale.
        xy = np.round(np.array([[t.x, t.y] for t in tiles], dtype=np.float64)
                      / cfg.scale).astype(np.int32)
        return Preprocessed("histo", stack, tile_xy=xy, stain_normalised=stained.normalised,
                            note=stained.reason)


def stain_normalizer(config: PreprocessConfig) -> StainNormalizer:
    """The configured stain normaliser, fitted to the reference image or the built-in stains."""
    method = config.histo.stain_method
    if config.stain_reference:
        reference = read_image(config.stain_reference)
        if reference.kind != "rgb":
            raise ConfigError(f"stain_reference: {config.stain_reference} is not an RGB image")
        try:
            return StainNormalizer(method).fit(reference.pixels)
        except ValueError as exc:
            raise ConfigError(f"stain_reference: {config.stain_reference}: {exc}") from None
    if method == "macenko":
        return StainNormalizer.builtin_reference()
    if method == "reinhard":
        raise ConfigError("histo.stain_method 'reinhard' needs stain_reference: an H&E image "
                          "whose colour statistics to match")
    return StainNormalizer("none")


def to_arrays(item: Preprocessed) -> dict[str, np.ndarray]:
    """The arrays a cache entry stores (mammograms as float16 to halve the footprint)."""
    arrays = {"image": item.image.astype(np.float16) if item.modality == "mammo" else item.image,
              "tile_xy": item.tile_xy,
              "stain_normalised": np.array(item.stain_normalised)}
    if item.geometry is not None:
        g = item.geometry
        arrays["geometry"] = np.array([*g.original_shape, *g.crop_box, g.flipped, g.scale,
                                       *g.pad, g.output_size], dtype=np.float64)
    if item.lesions:
        arrays["lesions"] = np.array([[les.x, les.y, les.r] for les in item.lesions])
    return arrays


@dataclass
class CacheReport:
    """What a caching pass did."""

    done: int = 0
    hits: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


# Worker-process state: one preprocessor and one cache per process, built on first use.
_WORKER: dict[str, object] = {}


def _cache_one(task: tuple[Record, str, str]) -> str:
    """Preprocess one record into the cache: "hit", "done", or the failure's reason."""
    record, cache_root, config_json = task
    key = (cache_root, config_json)
    if _WORKER.get("key") != key:
        config = PreprocessConfig.model_validate_json(config_json)
        _WORKER.update(key=key, cache=ArrayCache(Path(cache_root)),
                       pre=RecordPreprocessor(config), config=config)
    cache: ArrayCache = _WORKER["cache"]  # type: ignore[assignment]
    pre: RecordPreprocessor = _WORKER["pre"]  # type: ignore[assignment]
    cache_key = cache.key(Path(record.path), _cache_identity(pre.config, record))
    if cache.get_arrays(cache_key) is not None:
        return "hit"
    try:
        cache.put_arrays(cache_key, to_arrays(pre(record)))
    except (RadpathError, ValueError) as exc:
        return str(exc)
    return "done"


def _cache_identity(config: PreprocessConfig, record: Record) -> dict:
    """The cache key's config part: only what changes this record's arrays."""
    part = config.mammo if record.modality == "mammo" else config.histo
    extra = {"laterality": record.laterality, "lesions": [les.to_json() for les in record.lesions]}
    if record.modality == "histo":
        extra = {"stain_reference": config.stain_reference, "max_tiles": config.max_tiles}
    return {"format": CACHE_FORMAT, "modality": record.modality,
            "config": part.model_dump(mode="json"), **extra}


def cache_manifest(manifest: Manifest, cache_root: str | Path, config: PreprocessConfig, *,
                   workers: int | None = None, progress: bool = True) -> CacheReport:
    """Preprocess every record into the cache, in parallel; failures are reported, not raised."""
    tasks = [(r.with_(path=str(manifest.resolve_path(r))), str(cache_root),
              config.model_dump_json()) for r in manifest]
    outcomes = parallel_map(_cache_one, tasks, workers=workers, description="caching",
                            on_crash=lambda _task: "preprocessing crashed the worker process",
                            progress=progress)
    report = CacheReport()
    for (record, _, _), outcome in zip(tasks, outcomes, strict=True):
        if outcome in ("hit", "done"):
            report.done += 1
            report.hits += outcome == "hit"
        else:
            report.failed.append((record.path, outcome))
    return report


def load_cached(record: Record, cache: ArrayCache, pre: RecordPreprocessor,
                memory: ArrayMemory | None = None) -> dict[str, np.ndarray]:
    """The record's arrays from ``memory``, else the cache, computing and storing them on a
    miss (``memory``'s arrays are read-only)."""
    key = cache.key(Path(record.path), _cache_identity(pre.config, record))
    arrays = memory.get(key) if memory is not None else None
    if arrays is not None:
        return arrays
    arrays = cache.get_arrays(key)
    if arrays is None:
        arrays = to_arrays(pre(record))
        cache.put_arrays(key, arrays)
    if memory is not None:
        memory.put(key, arrays)
    return arrays
