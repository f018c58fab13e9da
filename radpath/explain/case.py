"""Explain one case: files in, maps, regions, histology links and a rationale out.

:func:`explain_case` reads the uploaded mammograms (and optional H&E images), preprocesses
them exactly as the run was trained (the run's ``PreprocessConfig``), runs the model once,
computes the chosen map, picks the most suspicious regions, links each to the most similar
histology tiles, and writes a template rationale (no language model). The
:class:`Explanation` renders its images on demand; :func:`write_explanation` writes the
``explanation.json`` (schema ``radpath.explanation/1``, see ``docs/explanation-schema.md``),
``figure.png`` and one overlay per view, atomically.

Modality contributions (``modality_contributions``): for each modality ``m``,
``delta_m = fused logit - fused logit without m``, where "without m" is the fused head on
the other modality's pooled feature alone (exactly what the model outputs for a unit
lacking ``m``), or on zero features when ``m`` is the only modality. The contributions are
the shares ``|delta_m| / (|delta_mammo| + |delta_histo|)`` (0 and 0 when both deltas are
0); the signed deltas are in ``modality_logit_deltas``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from radpath.batch.collate import collate_patients
from radpath.batch.keys import PAIRING_CODES, SIDE_CODES
from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD, tile_tensor
from radpath.batch.units import interleave_ranks
from radpath.data.io import read_image
from radpath.data.mammo import Geometry
from radpath.data.manifest import Record
from radpath.data.preprocess import RecordPreprocessor
from radpath.engine.checkpoint import LoadedRun
from radpath.errors import RadpathError
from radpath.explain import render
from radpath.explain.evidence import (
    LINK_METHOD,
    Region,
    find_regions,
    link_tiles,
    region_embeddings,
    tile_embeddings,
)
from radpath.explain.maps import MAP_KINDS, check_kind, compute_maps, explaining, map_to_original
from radpath.explain.verdict import verdict
from radpath.models.crossmodal import CrossModalModel

__all__ = ["MAP_KINDS", "SCHEMA", "Explanation", "explain_case", "validate_explanation",
           "write_explanation"]

SCHEMA = "radpath.explanation/1"
PAIRINGS = ("none", "true", "pseudo")
MAX_DISPLAY_SIDE = 1024
MIN_MAMMO_SIDE = 32  # below this a film cannot hold a breast at any model input size
MIN_HISTO_SIDE = 16
# An RGB file whose channels differ by at most this (of 255) is a grey image saved as RGB.
GREY_RGB_TOLERANCE = 3


@dataclass
class _View:
    file: str
    laterality: str
    geometry: Geometry
    image: np.ndarray  # preprocessed (S, S) in [0, 1]
    display: np.ndarray  # original frame, long side <= MAX_DISPLAY_SIDE, uint8
    display_scale: float


@dataclass
class _Tile:
    file: str
    x: int
    y: int
    image: np.ndarray  # uint8 RGB (t, t, 3), stain-normalised
    size: int  # side in original pixels (t / histo.scale)


@dataclass
class Explanation:
    """One explained case.

    Attributes:
        data: the ``explanation.json`` content (use :meth:`to_json` for a copy).
        rationale: the plain-language summary.
        displays: per view, the original mammogram downscaled to at most 1024 px (uint8).
        heatmaps: per view, the map in the same frame, in [0, 1].
        tiles: the histology tiles (uint8 RGB), indexed as ``data["tiles"]``.
        grid_maps: the map on the token grid, ``(V, gh, gw)``.
    """

    data: dict[str, Any]
    rationale: str
    displays: list[np.ndarray] = field(default_factory=list)
    heatmaps: list[np.ndarray] = field(default_factory=list)
    tiles: list[np.ndarray] = field(default_factory=list)
    grid_maps: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``explanation.json`` content (a deep copy)."""
        return copy.deepcopy(self.data)

    def _check_view(self, view: int) -> int:
        if not 0 <= view < len(self.displays):
            raise IndexError(f"view {view} out of range: the case has {len(self.displays)}")
        return view

    def _circles(self, view: int) -> list[render.Circle]:
        scale = self.data["views"][view]["display_scale"]
        return [render.Circle(r["rank"], r["x"] * scale, r["y"] * scale, r["r"] * scale)
                for r in self.data["regions"] if r["view"] == view]

    def overlay_image(self, view: int = 0, *, opacity: float = 0.45) -> np.ndarray:
        """BGR mammogram with the heatmap blended in and the numbered regions."""
        view = self._check_view(view)
        return render.overlay(self.displays[view], self.heatmaps[view], self._circles(view),
                              opacity=opacity)

    def overlay_png(self, view: int = 0, *, opacity: float = 0.45) -> bytes:
        """The original-frame mammogram (long side <= 1024 px) with heatmap and regions."""
        return render.png(self.overlay_image(view, opacity=opacity))

    def heatmap_png(self, view: int = 0) -> bytes:
        """The heatmap alone, RGBA (alpha = map value), the size of :meth:`base_png`."""
        return render.png(render.heat_rgba(self.heatmaps[self._check_view(view)]))

    def base_png(self, view: int = 0) -> bytes:
        """The mammogram alone, the size of :meth:`overlay_png`."""
        return render.png(self.displays[self._check_view(view)])

    def tile_png(self, index: int) -> bytes:
        """Histology tile ``index`` of ``to_json()["tiles"]`` (RGB)."""
        if not 0 <= index < len(self.tiles):
            raise IndexError(f"tile {index} out of range: the case has {len(self.tiles)}")
        return render.png(cv2.cvtColor(self.tiles[index], cv2.COLOR_RGB2BGR))

    def figure_image(self) -> np.ndarray:
        """BGR figure: every view with heatmap and regions, beside each region's tiles."""
        panels = [self.overlay_image(v) for v in range(len(self.displays))]
        height = max(p.shape[0] for p in panels)
        panels = [cv2.resize(p, (max(1, round(p.shape[1] * height / p.shape[0])), height))
                  for p in panels]
        gap = np.full((height, 8, 3), render.BACKGROUND, np.uint8)
        left = np.hstack([x for p in panels for x in (p, gap)][:-1])
        rows = [render.TileRow(r["rank"], r["score"],
                               [(self.tiles[link["tile"]], link["similarity"])
                                for link in r["links"]]) for r in self.data["regions"]]
        p = self.data["predictions"]
        title = (f"{self.data['map_kind']} map | fused p={p['fused']:.2f}"
                 + (f" | mammo p={p['mammo']:.2f}" if p["mammo"] is not None else "")
                 + (f" | histo p={p['histo']:.2f}" if p["histo"] is not None else "")
                 + f" | pairing: {self.data['pairing']}")
        return render.figure(left, rows, title=title)

    def figure_png(self) -> bytes:
        """The figure as PNG bytes."""
        return render.png(self.figure_image())


# ------------------------------------------------------------------------------ reading

def _is_grey_rgb(pixels: np.ndarray) -> bool:
    sample = pixels[:: max(1, pixels.shape[0] // 256), :: max(1, pixels.shape[1] // 256)]
    sample = sample.astype(np.int16)
    spread = np.abs(sample - sample[..., :1]).max()
    return int(spread) <= GREY_RGB_TOLERANCE


def read_mammogram(path: str | Path) -> np.ndarray:
    """A mammogram file as float32 grey ``(H, W)`` in [0, 1], or an error naming the file."""
    image = read_image(path)
    pixels = image.pixels
    if image.kind == "rgb":
        if not _is_grey_rgb(pixels):
            raise RadpathError(f"{path}: looks like a colour (histology?) image, expected a "
                               "greyscale mammogram")
        pixels = pixels[..., 0].astype(np.float32) / 255.0
    height, width = pixels.shape[:2]
    if min(height, width) < MIN_MAMMO_SIDE:
        raise RadpathError(f"{path}: image of {width} x {height} pixels is too small for a "
                           f"mammogram: both sides must be at least {MIN_MAMMO_SIDE} pixels")
    return pixels


def _load_view(path: str | Path, pre: RecordPreprocessor) -> _View:
    pixels = read_mammogram(path)
    try:
        result = pre.mammo.transform(pixels, laterality="")
    except ValueError as exc:  # e.g. a constant image
        raise RadpathError(f"{path}: cannot be preprocessed as a mammogram ({exc})") from None
    height, width = pixels.shape
    scale = min(1.0, MAX_DISPLAY_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    display = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA) if scale < 1 else pixels
    display = np.clip(display * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return _View(Path(path).name, result.laterality, result.geometry, result.image, display,
                 scale)


def _load_tiles(paths: Sequence[str | Path], pre: RecordPreprocessor,
                limit: int | None) -> list[_Tile]:
    stacks = []
    for path in paths:
        image = read_image(path)
        if image.kind != "rgb":
            raise RadpathError(f"{path}: greyscale image given as histology; expected an RGB "
                               "H&E image")
        if min(image.size) < MIN_HISTO_SIDE:
            raise RadpathError(f"{path}: image of {image.size[1]} x {image.size[0]} pixels "
                               f"is too small for histology (at least {MIN_HISTO_SIDE} px)")
        record = Record(image_id=Path(path).stem, patient_id="case", modality="histo",
                        path=str(path))
        done = pre(record)
        side = round(done.image.shape[1] / pre.config.histo.scale)
        stacks.append([_Tile(Path(path).name, int(x), int(y), tile, side)
                       for tile, (x, y) in zip(done.image, done.tile_xy, strict=True)])
    return interleave_ranks(stacks)[:limit]


def _batch(views: list[_View], tiles: list[_Tile], tile_size: int, grid: int,
           pairing: str) -> dict[str, Any]:
    mammo = np.stack([(v.image - MAMMO_MEAN) / MAMMO_STD for v in views])[:, None]
    if tiles:
        histo = tile_tensor(np.stack([t.image for t in tiles]))
    else:
        histo = torch.zeros(0, 3, tile_size, tile_size)
    item = {
        "unit_id": "case", "mammo": torch.from_numpy(mammo.astype(np.float32)),
        "lesion_map": torch.zeros(len(views), grid, grid),
        "lesion_known": torch.zeros(len(views), dtype=torch.bool), "histo": histo,
        "mammo_side": torch.tensor([SIDE_CODES.get(v.laterality, -1) for v in views]),
        "mammo_view_label": torch.full((len(views),), -1, dtype=torch.long),
        "has_mammo": torch.tensor(True), "has_histo": torch.tensor(bool(tiles)),
        "label": torch.tensor(-1), "malignant": torch.tensor(0.0), "grade": torch.tensor(-1),
        "mammo_domain": torch.tensor(-1), "histo_domain": torch.tensor(-1),
        "pairing": torch.tensor(PAIRING_CODES["" if pairing == "none" else pairing]),
    }
    return collate_patients([item])


# ------------------------------------------------------------------------------ explaining

def _contributions(model: CrossModalModel, out: dict[str, torch.Tensor],
                   has_histo: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Shares and signed drop-one-modality logit deltas (see the module docstring)."""
    head = model.heads["fused"]
    fused = out["fused_logit"][0]
    mammo, histo = out["mammo_feat"], out["histo_feat"]
    without_mammo = head(histo if has_histo else torch.zeros_like(mammo))[0]
    without_histo = head(mammo)[0]
    deltas = {"mammo": float(fused - without_mammo),
              "histo": float(fused - without_histo) if has_histo else 0.0}
    total = sum(abs(d) for d in deltas.values())
    shares = {m: (abs(d) / total if total > 0 else 0.0) for m, d in deltas.items()}
    return shares, deltas


def explain_case(run: LoadedRun, mammo_paths: Sequence[str | Path],
                 histo_paths: Sequence[str | Path] = (), *, top_k: int = 3,
                 tiles_per_region: int = 3, map_kind: str = "localisation",
                 pairing: str = "none", threshold: float = 0.5,
                 threshold_source: str = "default 0.5") -> Explanation:
    """Explain the model's decision on one case.

    Args:
        run: a loaded run (:func:`radpath.engine.checkpoint.load_run`).
        mammo_paths: the case's mammograms (DICOM, PGM, PNG, TIFF...), at least one.
        histo_paths: H&E images (RGB), optional.
        top_k: suspicious regions to report.
        tiles_per_region: histology tiles linked to each region.
        map_kind: one of :data:`MAP_KINDS`.
        pairing: ``"pseudo"`` when the histology comes from another patient; otherwise
            a case holding both modalities is taken as one patient (``"true"``).
        threshold: the operating threshold the rationale's verdict is read against (the
            run's evaluation records one per modality in ``operating_points.json``).
        threshold_source: where the threshold comes from, stated in the rationale.

    Raises:
        ImageReadError: a file is missing or not an image (the message names it).
        RadpathError: a colour image given as a mammogram, a grey one as histology, an
            image too small, or no mammogram at all.
        ValueError: an unknown map kind or pairing, or ``top_k < 1``.
    """
    check_kind(map_kind)
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}; got {pairing!r}")
    if top_k < 1 or tiles_per_region < 0:
        raise ValueError(f"need top_k >= 1 and tiles_per_region >= 0, got {top_k}, "
                         f"{tiles_per_region}")
    if not mammo_paths:
        raise RadpathError("explain needs at least one mammogram")
    config = run.config.data
    pre = RecordPreprocessor(config.preprocess)
    views = [_load_view(path, pre) for path in mammo_paths]
    tiles = _load_tiles(histo_paths, pre, config.eval_tiles)
    pairing = ("pseudo" if pairing == "pseudo" else "true") if tiles else "none"
    model: CrossModalModel = run.algorithm.model
    size = config.preprocess.mammo.size
    grid = model.backbone.grid_size("mammo", (size, size))
    batch = _batch(views, tiles, config.preprocess.histo.tile_size, grid[0], pairing)
    with explaining(model), torch.no_grad():
        out = model(batch)
        patches = model.view_tokens(batch["mammo"][0])
        tile_cls = (model.encode_images(batch["histo"][0], "histo")[0] if tiles else None)
    maps = compute_maps(model, batch, [map_kind], out=out)[map_kind]
    p_mammo = float(torch.sigmoid(out["mammo_logit"][0]))
    regions = find_regions(maps, np.stack([v.image for v in views]),
                           [v.geometry for v in views], p_mammo, top_k=top_k,
                           per_view=map_kind == "mil")
    with torch.no_grad():
        if tile_cls is not None:
            link_tiles(regions, region_embeddings(model, patches, regions, grid, size),
                       tile_embeddings(model, tile_cls), tiles_per_region)
        shares, deltas = _contributions(model, out, tile_cls is not None)
    top = float(maps.max()) if maps.size and maps.max() > 0 else 1.0
    heatmaps = [map_to_original(m / top, v.geometry, display_scale=v.display_scale)
                for m, v in zip(maps, views, strict=True)]
    data = _json(views, tiles, regions, out, shares, deltas, map_kind, pairing)
    data["threshold"] = {"value": round(float(threshold), 6), "source": threshold_source}
    data["rationale"] = rationale(data, views)
    return Explanation(data, data["rationale"], [v.display for v in views], heatmaps,
                       [t.image for t in tiles], maps)


def _json(views: list[_View], tiles: list[_Tile], regions: list[Region],
          out: dict[str, torch.Tensor], shares: dict[str, float], deltas: dict[str, float],
          map_kind: str, pairing: str) -> dict[str, Any]:
    def prob(key: str) -> float:
        return round(float(torch.sigmoid(out[key][0])), 6)

    mammo_att = out["mammo_attention"][0].tolist()
    histo_att = out["histo_attention"][0].tolist()
    return {
        "schema": SCHEMA,
        "pairing": pairing,
        "predictions": {"mammo": prob("mammo_logit"),
                        "histo": prob("histo_logit") if tiles else None,
                        "fused": prob("fused_logit")},
        "modality_contributions": {m: round(v, 6) for m, v in shares.items()},
        "modality_logit_deltas": {m: round(v, 6) for m, v in deltas.items()},
        "views": [{"index": i, "file": v.file, "laterality": v.laterality,
                   "width": int(v.geometry.original_shape[1]),
                   "height": int(v.geometry.original_shape[0]),
                   "mil_attention": round(float(mammo_att[i]), 6),
                   "display_scale": v.display_scale}
                  for i, v in enumerate(views)],
        "regions": [{"rank": rank, "view": r.view, "x": round(r.x, 2), "y": round(r.y, 2),
                     "r": round(r.r, 2), "score": round(r.score, 6),
                     "links": [{"tile": t, "similarity": round(s, 6)} for t, s in r.links]}
                    for rank, r in enumerate(regions, start=1)],
        "tiles": [{"index": i, "file": t.file, "x": t.x, "y": t.y, "size": t.size,
                   "mil_attention": round(float(histo_att[i]), 6)}
                  for i, t in enumerate(tiles)],
        "map_kind": map_kind,
        "link_method": LINK_METHOD if tiles else "",
        "rationale": "",
    }


# ------------------------------------------------------------------------------ rationale

def _where(region: dict[str, Any], view: _View) -> str:
    """'the upper part of the left breast, near the chest wall' from the crop box."""
    y0, x0, y1, x1 = view.geometry.crop_box
    vertical = "upper" if region["y"] < (y0 + y1) / 2 else "lower"
    depth = (region["x"] - x0) / max(x1 - x0, 1)
    if view.laterality == "R":
        depth = 1.0 - depth
    along = ("near the chest wall" if depth < 1 / 3 else
             "towards the nipple" if depth > 2 / 3 else "in the middle depth")
    side = {"L": "left", "R": "right"}.get(view.laterality, "imaged")
    return f"the {vertical} part of the {side} breast, {along}"


def rationale(data: dict[str, Any], views: Sequence[_View]) -> str:
    """A template summary of what was found, where, how sure, and what agrees."""
    p = data["predictions"]
    fused = p["fused"]
    cut = data.get("threshold", {"value": 0.5, "source": "default 0.5"})
    threshold = cut["value"]
    lines = [f"The model's {verdict(fused, threshold, cut['source'])}."]
    if data["regions"]:
        top = data["regions"][0]
        view = views[top["view"]]
        lines.append(f"The most suspicious region is in {_where(top, view)} at "
                     f"({top['x']:.0f}, {top['y']:.0f}), radius {top['r']:.0f} px, in view "
                     f"{top['view'] + 1} ({view.file}), from the {data['map_kind']} map.")
    if data["map_kind"] == "mil":
        lines.append("The MIL map ranks whole views, not locations within a view.")
    lines.append(f"The mammograms alone give p={p['mammo']:.2f}.")
    if p["histo"] is not None:
        # No "agrees": each modality has its own operating threshold, not the fused one.
        lines.append(f"The histology alone gives p={p['histo']:.2f}.")
        c = data["modality_contributions"]
        lines.append(f"Of the fused decision, the mammograms contribute {c['mammo']:.0%} and "
                     f"the histology {c['histo']:.0%}.")
        if data["pairing"] == "pseudo":
            lines.append("Caution: the histology comes from a different patient (a "
                         "pseudo-pair); its links show resemblance, not the same lesion.")
        else:
            lines.append("The histology is assumed to come from the same patient.")
    lines.append("Maps show where the model looked; they are not a diagnosis.")
    return " ".join(lines)


# ------------------------------------------------------------------------------ validation

def _fail(where: str, why: str) -> None:
    raise ValueError(f"explanation {where}: {why}")


def _number(value: Any, where: str, *, low: float | None = None,
            high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(where, f"expected a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        _fail(where, f"{value} outside [{low}, {high}]")


def _keys(obj: Any, required: set[str], where: str, optional: set[str] = frozenset()) -> None:
    if not isinstance(obj, dict):
        _fail(where, f"expected an object, got {type(obj).__name__}")
    missing, extra = required - obj.keys(), obj.keys() - required - optional
    if missing or extra:
        _fail(where, f"missing keys {sorted(missing)}, unknown keys {sorted(extra)}")


def _list(obj: Any, where: str) -> list:
    if not isinstance(obj, list):
        _fail(where, f"expected a list, got {type(obj).__name__}")
    return obj


def validate_explanation(d: Any) -> None:
    """Raise ``ValueError`` naming the first field of ``d`` that breaks the schema."""
    _keys(d, {"schema", "pairing", "predictions", "modality_contributions", "views",
              "regions", "tiles", "map_kind", "rationale"}, "root",
          {"modality_logit_deltas", "threshold", "link_method"})
    if d["schema"] != SCHEMA:
        _fail("schema", f"expected {SCHEMA!r}, got {d['schema']!r}")
    if d["pairing"] not in PAIRINGS:
        _fail("pairing", f"expected one of {PAIRINGS}, got {d['pairing']!r}")
    if d["map_kind"] not in MAP_KINDS:
        _fail("map_kind", f"expected one of {MAP_KINDS}, got {d['map_kind']!r}")
    if not isinstance(d["rationale"], str) or not d["rationale"]:
        _fail("rationale", "expected a non-empty string")
    _keys(d["predictions"], {"mammo", "histo", "fused"}, "predictions")
    for key, value in d["predictions"].items():
        if value is not None or key == "fused":
            _number(value, f"predictions.{key}", low=0.0, high=1.0)
    for name in ("modality_contributions", "modality_logit_deltas"):
        if name in d:
            _keys(d[name], {"mammo", "histo"}, name)
            for key, value in d[name].items():
                _number(value, f"{name}.{key}", **({"low": 0.0, "high": 1.0}
                                                   if name == "modality_contributions" else {}))
    if "threshold" in d:
        _keys(d["threshold"], {"value", "source"}, "threshold")
        _number(d["threshold"]["value"], "threshold.value", low=0.0, high=1.0)
        if not isinstance(d["threshold"]["source"], str):
            _fail("threshold.source", "expected a string")
    views = _list(d["views"], "views")
    if not views:
        _fail("views", "expected at least one view")
    for i, view in enumerate(views):
        where = f"views[{i}]"
        _keys(view, {"index", "file", "laterality", "width", "height", "mil_attention"},
              where, {"display_scale"})
        if view["index"] != i:
            _fail(f"{where}.index", f"expected {i}, got {view['index']!r}")
        if not isinstance(view["file"], str) or "/" in view["file"] or "\\" in view["file"]:
            _fail(f"{where}.file", f"expected a base name, got {view['file']!r}")
        if view["laterality"] not in ("L", "R", ""):
            _fail(f"{where}.laterality", f"expected 'L', 'R' or '', got {view['laterality']!r}")
        for key in ("width", "height"):
            _number(view[key], f"{where}.{key}", low=1)
        _number(view["mil_attention"], f"{where}.mil_attention", low=0.0, high=1.0)
    tiles = _list(d["tiles"], "tiles")
    for i, tile in enumerate(tiles):
        where = f"tiles[{i}]"
        _keys(tile, {"index", "file", "x", "y", "size", "mil_attention"}, where)
        if tile["index"] != i:
            _fail(f"{where}.index", f"expected {i}, got {tile['index']!r}")
        for key in ("x", "y", "size"):
            _number(tile[key], f"{where}.{key}", low=0)
        _number(tile["mil_attention"], f"{where}.mil_attention", low=0.0, high=1.0)
    _validate_regions(_list(d["regions"], "regions"), views, len(tiles))


def _validate_regions(regions: list, views: list, n_tiles: int) -> None:
    previous = math.inf
    for i, region in enumerate(regions):
        where = f"regions[{i}]"
        _keys(region, {"rank", "view", "x", "y", "r", "score", "links"}, where)
        if region["rank"] != i + 1:
            _fail(f"{where}.rank", f"expected {i + 1}, got {region['rank']!r}")
        if not isinstance(region["view"], int) or not 0 <= region["view"] < len(views):
            _fail(f"{where}.view", f"no view {region['view']!r}")
        view = views[region["view"]]
        _number(region["x"], f"{where}.x", low=0, high=view["width"])
        _number(region["y"], f"{where}.y", low=0, high=view["height"])
        _number(region["r"], f"{where}.r", low=0)
        _number(region["score"], f"{where}.score", low=0)
        if region["score"] > previous:
            _fail(f"{where}.score", "regions must be sorted by decreasing score")
        previous = region["score"]
        for j, link in enumerate(_list(region["links"], f"{where}.links")):
            _keys(link, {"tile", "similarity"}, f"{where}.links[{j}]")
            if not isinstance(link["tile"], int) or not 0 <= link["tile"] < n_tiles:
                _fail(f"{where}.links[{j}].tile", f"no tile {link['tile']!r}")
            _number(link["similarity"], f"{where}.links[{j}].similarity", low=-1.0001,
                    high=1.0001)


# ------------------------------------------------------------------------------ writing

def write_explanation(explanation: Explanation, out_dir: Path) -> dict[str, Path]:
    """Write ``explanation.json``, ``figure.png`` and ``overlay_view{i}.png`` into ``out_dir``.

    Everything is rendered in memory, written into a temporary folder beside ``out_dir``
    and renamed onto it, so a failure leaves no partial output. An existing ``out_dir`` is
    replaced only when it is empty or holds a previous explanation.

    Returns:
        ``{"explanation": path, "figure": path, "overlay_view0": path, ...}``.
    """
    out_dir = Path(out_dir)
    data = explanation.to_json()
    validate_explanation(data)
    files = {"explanation.json": (json.dumps(data, indent=2) + "\n").encode(),
             "figure.png": explanation.figure_png()}
    for view in range(len(data["views"])):
        files[f"overlay_view{view}.png"] = explanation.overlay_png(view)
    if out_dir.exists() and (not out_dir.is_dir() or (
            any(out_dir.iterdir()) and not (out_dir / "explanation.json").is_file())):
        raise RadpathError(f"{out_dir} exists and is not an explanation folder; choose "
                           "another --out")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {name.rsplit(".", 1)[0]: out_dir / name for name in files}


def _swap_in(tmp: Path, out_dir: Path) -> None:
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex}"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
