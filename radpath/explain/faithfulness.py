"""Does a map show what the model uses? Deletion/insertion curves, a sanity check, hit rate.

* Deletion (Petsiuk et al. 2018, RISE): blank the most salient tokens of a preprocessed
  mammogram first, a growing fraction at a time, and record the mammography malignancy
  probability; a faithful map makes it fall fast (low area under the curve). Insertion
  starts from the blank image and puts the most salient tokens back (high area is good).
  "Blank" is the preprocessed background (intensity 0, i.e. ``-MAMMO_MEAN / MAMMO_STD``
  once normalised). Compare each map with a random map of the same grid.
* Sanity check (Adebayo et al. 2018): maps of the trained model against maps of the same
  architecture with every weight re-initialised; the Spearman rank correlation over the
  tokens should be low. A constant map (``mil`` within one view) has no ranking: NaN.
* Localisation hit: the map's peak (over the breast) lies in a grid cell marked by
  :func:`radpath.batch.dataset.lesion_map` (its centre inside a lesion circle, or holding
  the lesion's centre).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD, lesion_map
from radpath.explain.evidence import breast_cells
from radpath.explain.maps import explaining
from radpath.models.crossmodal import CrossModalModel

BLANK = -MAMMO_MEAN / MAMMO_STD


@dataclass(frozen=True)
class Curve:
    """Probabilities after removing (or inserting) fractions of the tokens, and its area."""

    fractions: np.ndarray
    probabilities: np.ndarray

    @property
    def auc(self) -> float:
        """Trapezoid area under the curve over fractions in [0, 1]."""
        x, y = self.fractions, self.probabilities
        return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def single_view_batch(images: Tensor) -> dict[str, Tensor]:
    """A batch of ``N`` units holding one mammogram ``(1, S, S)`` each and nothing else."""
    n, size = images.shape[0], images.shape[-1]
    return {
        "mammo": images.reshape(n, 1, 1, size, size),
        "mammo_mask": torch.ones(n, 1, dtype=torch.bool),
        "histo": torch.zeros(n, 1, 3, 8, 8), "histo_mask": torch.zeros(n, 1, dtype=torch.bool),
        "has_mammo": torch.ones(n, dtype=torch.bool),
        "has_histo": torch.zeros(n, dtype=torch.bool),
    }


def mammo_probability(model: CrossModalModel, images: Tensor, chunk: int = 16) -> np.ndarray:
    """The mammography malignancy probability of each image ``(N, 1, S, S)``, alone."""
    probabilities = []
    with explaining(model), torch.no_grad():
        for start in range(0, images.shape[0], chunk):
            out = model(single_view_batch(images[start:start + chunk]))
            probabilities.append(torch.sigmoid(out["mammo_logit"]).cpu().numpy())
    return np.concatenate(probabilities)


def _token_masks(grid_map: np.ndarray, size: int, steps: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, Tensor]:
    """Fractions and pixel masks ``(steps + 1, S, S)``: True on the top-ranked tokens."""
    gh, gw = grid_map.shape
    # Random tie-breaking, so a constant map removes tokens in random order, not raster.
    order = np.lexsort((rng.random(grid_map.size), -grid_map.reshape(-1)))
    fractions = np.linspace(0.0, 1.0, steps + 1)
    masks = np.zeros((steps + 1, gh * gw), dtype=bool)
    for k, fraction in enumerate(fractions):
        masks[k, order[: round(fraction * grid_map.size)]] = True
    cells = masks.reshape(-1, gh, gw)
    pixels = np.repeat(np.repeat(cells, size // gh, axis=1), size // gw, axis=2)
    return fractions, torch.from_numpy(pixels)


def deletion_curve(model: CrossModalModel, image: Tensor, grid_map: np.ndarray, *,
                   steps: int = 10, insertion: bool = False, seed: int = 0) -> Curve:
    """Deletion (or insertion) curve of one normalised mammogram ``(1, S, S)``.

    Args:
        model: the cross-modal model.
        image: the preprocessed, normalised mammogram.
        grid_map: ``(gh, gw)`` saliency map; higher = more salient.
        steps: number of increments from 0 to all tokens.
        insertion: start blank and insert the most salient tokens instead.
        seed: tie-breaking among equal map values.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    size = image.shape[-1]
    fractions, masks = _token_masks(np.asarray(grid_map, np.float64), size, steps,
                                    np.random.default_rng(seed))
    blank = torch.full_like(image, BLANK)
    chosen = masks[:, None].to(image.device)
    images = (torch.where(chosen, image, blank) if insertion
              else torch.where(chosen, blank, image))
    return Curve(fractions, mammo_probability(model, images))


def random_map(grid: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A uniform random map: the baseline every map must beat."""
    return np.random.default_rng(seed).random(grid).astype(np.float32)


def randomised_copy(model: CrossModalModel, seed: int = 0) -> CrossModalModel:
    """A deep copy of ``model`` with every parameter re-initialised (Adebayo's full cascade)."""
    torch.manual_seed(seed)
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if module is not clone and hasattr(module, "reset_parameters"):
            module.reset_parameters()
    # The class token and position embedding have no reset_parameters: redraw them too.
    with torch.no_grad():
        for name, parameter in clone.named_parameters():
            if name.endswith(("cls_token", "pos_embed")):
                parameter.normal_(0.0, 0.02)
    return clone.eval()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps' values, in [-1, 1]; NaN if either is constant."""
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    if a.size != b.size:
        raise ValueError(f"maps differ in size: {a.size} and {b.size}")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.clip(spearmanr(a, b).statistic, -1.0, 1.0))


def peak_cell(grid_map: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    """The highest cell of the map over the breast of the preprocessed [0, 1] image."""
    allowed = breast_cells(image, grid_map.shape)
    masked = np.where(allowed, grid_map, -np.inf)
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(masked)), grid_map.shape))


def localisation_hit(grid_map: np.ndarray, image: np.ndarray, lesions: np.ndarray) -> bool:
    """Whether the map's peak lies in a lesion cell (lesions ``(K, 3)`` in output pixels)."""
    size = image.shape[0]
    truth = lesion_map(lesions, size, size // grid_map.shape[0])
    return bool(truth[peak_cell(grid_map, image)] > 0)
