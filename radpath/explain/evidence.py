"""Suspicious regions from a map, and the histology tiles that resemble each region.

Regions (:func:`find_regions`)
    Peaks of the token-grid map, picked greedily from the highest down with non-maximum
    suppression (a peak suppresses every cell within ``nms_cells`` cells), restricted to
    cells over the breast. A region's centre is the map-weighted centroid of its blob (the
    cells around the peak, connected to it, whose value is at least half the peak's); its
    radius is the blob's equivalent-circle radius, at least half a cell and at most a
    quarter of the output image. Centre and radius are then carried to original pixels
    through the view's :class:`~radpath.data.mammo.Geometry`.

    ``score = (peak value / largest value of the map over all views) x p``, where ``p`` is
    the model's mammography malignancy probability: the relative saliency of the region,
    scaled by how suspicious the model finds the case. Ranking by score within a case is
    ranking by saliency; the factor ``p`` makes scores of a clearly benign case small.

    The ``mil`` map is constant within a view: it yields one region per view, over the
    whole breast (centroid and equivalent radius of the breast mask), scored by the view's
    attention weight times ``p``.

Links (:func:`link_tiles`)
    A region is embedded by mean-pooling the patch tokens of the cells inside its circle
    (in output pixels) and projecting them with the model's mammography projection head
    (``model.projections["mammo"]``, the head of the contrastive space; it is trained on
    pooled view features, so pooled region tokens are an approximation of what it saw). A
    tile is embedded by the histology projection of its CLS feature.

    Raw cosine similarities in that space share a part common to the whole film (every
    region of a film resembles a given tile about equally), which can make each region
    link the same tiles. Links are therefore ranked by the *region-centred* cosine
    similarity (:data:`LINK_METHOD`): from each region's projection the projection of its
    whole view (all its tokens pooled) is subtracted, and the similarity is the cosine of
    that difference with the tile's projection, in [-1, 1]. It asks "what this region has
    beyond its film" and which tile shows it. Centring the tiles too (on the mean of the
    case's tiles) is available (``centred=True`` in :func:`tile_embeddings`) but off: on
    the synthetic check it linked the right pattern less often.
    ``benchmarks/region_links.py`` measures, on the synthetic cohort, how often a region's
    links show the histology pattern of its lesion type, against random links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from radpath.data.mammo import Geometry
from radpath.models.crossmodal import CrossModalModel

LINK_METHOD = ("cosine similarity in the model's shared space between the region's pooled "
               "tokens through the mammography projection, less its whole view's (so "
               "what the film has everywhere does not count), and each tile's histology "
               "projection")
BREAST_LEVEL = 0.02  # a cell whose mean preprocessed intensity exceeds this is breast


@dataclass
class Region:
    """A suspicious region of one view.

    Attributes:
        view: index of the view.
        x, y, r: centre and radius in original pixels, origin top-left.
        score: see the module docstring.
        cells: ``(row, col)`` grid cells of the region (its tokens).
        output_xyr: centre and radius in output (preprocessed) pixels.
        links: ``(tile index, cosine similarity)``, most similar first.
    """

    view: int
    x: float
    y: float
    r: float
    score: float
    cells: list[tuple[int, int]] = field(default_factory=list)
    output_xyr: tuple[float, float, float] = (0.0, 0.0, 0.0)
    links: list[tuple[int, float]] = field(default_factory=list)


def breast_cells(image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Bool ``(gh, gw)``: cells over the breast of a preprocessed [0, 1] image (all if none)."""
    gh, gw = grid
    size = image.shape[0]
    means = image[: gh * (size // gh), : gw * (size // gw)].reshape(
        gh, size // gh, gw, size // gw).mean(axis=(1, 3))
    cells = means > BREAST_LEVEL
    return cells if cells.any() else np.ones(grid, dtype=bool)


def _blob(grid_map: np.ndarray, peak: tuple[int, int], allowed: np.ndarray,
          reach: int) -> list[tuple[int, int]]:
    """Cells connected to ``peak`` within ``reach`` of it whose value is >= half the peak's."""
    level = 0.5 * grid_map[peak]
    seen, stack = {peak}, [peak]
    while stack:
        i, j = stack.pop()
        for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            n = (i + di, j + dj)
            if (0 <= n[0] < grid_map.shape[0] and 0 <= n[1] < grid_map.shape[1]
                    and n not in seen and allowed[n] and grid_map[n] >= level
                    and max(abs(n[0] - peak[0]), abs(n[1] - peak[1])) <= reach):
                seen.add(n)
                stack.append(n)
    return sorted(seen)


def _region_from_cells(view: int, cells: list[tuple[int, int]], grid_map: np.ndarray,
                       geometry: Geometry, score: float) -> Region:
    size = geometry.output_size
    cell = size / grid_map.shape[0], size / grid_map.shape[1]
    rows = np.array([c[0] for c in cells], dtype=np.float64)
    cols = np.array([c[1] for c in cells], dtype=np.float64)
    weights = np.array([max(float(grid_map[c]), 0.0) for c in cells]) + 1e-12
    cx = float(((cols + 0.5) * cell[1] * weights).sum() / weights.sum())
    cy = float(((rows + 0.5) * cell[0] * weights).sum() / weights.sum())
    radius = math.sqrt(len(cells) * cell[0] * cell[1] / math.pi)
    radius = float(np.clip(radius, 0.5 * max(cell), 0.25 * size))
    x, y = geometry.to_original(np.array([cx, cy]))
    return Region(view, float(x), float(y), radius / geometry.scale, score, cells,
                  (cx, cy, radius))


def find_regions(maps: np.ndarray, images: np.ndarray, geometries: list[Geometry],
                 probability: float, *, top_k: int = 3, nms_cells: int = 2,
                 per_view: bool = False) -> list[Region]:
    """The ``top_k`` most salient regions over all views, highest score first.

    Args:
        maps: ``(V, gh, gw)`` maps of one kind.
        images: ``(V, S, S)`` preprocessed [0, 1] images (to keep to the breast).
        geometries: the geometry of each view.
        probability: the model's mammography malignancy probability.
        top_k: regions to return.
        nms_cells: a peak suppresses the cells within this many cells (Chebyshev).
        per_view: one region per view over the whole breast (for the constant ``mil`` map).
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    top = float(np.max(maps)) if maps.size else 0.0
    scale = top if top > 0 else 1.0
    regions = []
    for view, (grid_map, image, geometry) in enumerate(zip(maps, images, geometries,
                                                           strict=True)):
        allowed = breast_cells(image, grid_map.shape)
        if per_view:
            cells = [tuple(c) for c in np.argwhere(allowed)]
            value = float(grid_map.max()) / scale * probability
            regions.append(_region_from_cells(view, cells, np.ones_like(grid_map), geometry,
                                              value))
            continue
        regions.extend(_view_peaks(view, grid_map, allowed, geometry, probability / scale,
                                   top_k, nms_cells))
    regions.sort(key=lambda region: -region.score)
    return regions[:top_k]


def _view_peaks(view: int, grid_map: np.ndarray, allowed: np.ndarray, geometry: Geometry,
                factor: float, top_k: int, nms_cells: int) -> list[Region]:
    suppressed = ~allowed
    regions = []
    for flat in np.argsort(-grid_map, axis=None, kind="stable"):
        peak = tuple(int(v) for v in np.unravel_index(flat, grid_map.shape))
        if suppressed[peak]:
            continue
        cells = _blob(grid_map, peak, allowed, nms_cells)
        regions.append(_region_from_cells(view, cells, grid_map, geometry,
                                          float(grid_map[peak]) * factor))
        i, j = peak
        suppressed[max(0, i - nms_cells): i + nms_cells + 1,
                   max(0, j - nms_cells): j + nms_cells + 1] = True
        if len(regions) == top_k:
            break
    return regions


# ------------------------------------------------------------------------- histology links

def region_embeddings(model: CrossModalModel, patches: Tensor, regions: list[Region],
                      grid: tuple[int, int], output_size: int, *,
                      centred: bool = True) -> Tensor:
    """Unit-norm embeddings ``(R, P)`` of regions: pooled tokens through the mammo projection.

    Args:
        model: the cross-modal model.
        patches: ``(V, gh * gw, D)`` patch tokens of the views.
        regions: the regions.
        grid: ``(gh, gw)``.
        output_size: side of the preprocessed image in pixels.
        centred: subtract the projection of the region's whole view (see the module
            docstring); False gives the raw projection.
    """
    project = model.projections["mammo"]
    pooled = torch.stack([patches[region.view,
                                  cells_in_circle(region.output_xyr, grid, output_size)]
                          .mean(dim=0) for region in regions])
    embedded = project(pooled)
    if centred:
        whole = project(patches.mean(dim=1))  # (V, P): each view's pooled tokens
        embedded = embedded - whole[[region.view for region in regions]]
    return F.normalize(embedded, dim=-1)


def cells_in_circle(xyr: tuple[float, float, float], grid: tuple[int, int],
                    output_size: int) -> Tensor:
    """Flat token indices of the cells whose centre lies in the circle (at least the centre's)."""
    cx, cy, radius = xyr
    ch, cw = output_size / grid[0], output_size / grid[1]
    rows = (np.arange(grid[0]) + 0.5) * ch
    cols = (np.arange(grid[1]) + 0.5) * cw
    inside = (cols[None, :] - cx) ** 2 + (rows[:, None] - cy) ** 2 <= radius**2
    i = min(max(int(cy // ch), 0), grid[0] - 1)
    j = min(max(int(cx // cw), 0), grid[1] - 1)
    inside[i, j] = True
    return torch.from_numpy(np.flatnonzero(inside.reshape(-1)))


def tile_embeddings(model: CrossModalModel, tile_cls: Tensor, *,
                    centred: bool = False) -> Tensor:
    """Unit-norm embeddings ``(T, P)`` of tiles' CLS features through the histo projection,
    less their mean when ``centred`` and there are two tiles or more."""
    embedded = model.projections["histo"](tile_cls)
    if centred and embedded.shape[0] > 1:
        embedded = embedded - embedded.mean(dim=0, keepdim=True)
    return F.normalize(embedded, dim=-1)


def link_tiles(regions: list[Region], region_emb: Tensor, tile_emb: Tensor,
               tiles_per_region: int) -> None:
    """Fill each region's ``links`` with its most similar tiles (cosine of the embeddings)."""
    if tile_emb.shape[0] == 0 or tiles_per_region < 1:
        return
    similarity = (region_emb @ tile_emb.T).detach().cpu().numpy()
    keep = min(tiles_per_region, tile_emb.shape[0])
    for region, row in zip(regions, similarity, strict=True):
        order = np.argsort(-row, kind="stable")[:keep]
        region.links = [(int(t), float(row[t])) for t in order]
