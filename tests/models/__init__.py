"""Tests of radpath.models, and a random patient batch shaped as in radpath.batch.keys."""

from __future__ import annotations

import torch
from torch import Tensor

PATCH = 8  # the patch size of the registered "vit_test" backbone


def random_batch(units: int = 4, views: int = 2, tiles: int = 3, size: int = 32,
                 histo_size: int = 32, seed: int = 0) -> dict[str, Tensor]:
    """A random batch with mixed modalities (see radpath/batch/keys.py for the keys).

    For the default 4 units: unit 0 has both modalities with its second view and third
    tile missing, unit 1 only mammograms, unit 2 only tiles (second tile missing), and
    unit 3 everything. Further units (if any) have both modalities complete.
    """
    gen = torch.Generator().manual_seed(seed)
    mammo_mask = torch.ones(units, views, dtype=torch.bool)
    histo_mask = torch.ones(units, tiles, dtype=torch.bool)
    if units >= 3:
        mammo_mask[0, 1:] = False
        histo_mask[0, 2:] = False
        histo_mask[1] = False
        mammo_mask[2] = False
        histo_mask[2, 1:2] = False
    label = torch.randint(0, 3, (units,), generator=gen)
    grid = size // PATCH
    return {
        "mammo": torch.randn(units, views, 1, size, size, generator=gen) * mammo_mask[
            ..., None, None, None],
        "mammo_mask": mammo_mask,
        "histo": torch.randn(units, tiles, 3, histo_size, histo_size, generator=gen) * histo_mask[
            ..., None, None, None],
        "histo_mask": histo_mask,
        "has_mammo": mammo_mask.any(dim=1),
        "has_histo": histo_mask.any(dim=1),
        "label": label,
        "malignant": (label == 2).float(),
        "grade": torch.randint(0, 3, (units,), generator=gen),
        "mammo_domain": torch.where(mammo_mask.any(dim=1), torch.arange(units) % 2, -1),
        "histo_domain": torch.where(histo_mask.any(dim=1), torch.arange(units) % 2, -1),
        "pairing": torch.ones(units, dtype=torch.long),
        "lesion_map": (torch.rand(units, views, grid, grid, generator=gen) > 0.8).float(),
        "lesion_known": mammo_mask.clone(),
        "mammo_side": torch.where(mammo_mask, torch.arange(views) % 2, -1),
        "mammo_view_label": torch.where(mammo_mask, label[:, None] - torch.arange(views) % 2, -1),
    }


class CountingMixStyle(torch.nn.Module):
    """A stand-in MixStyle that records each call and returns the tokens unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], Tensor | None]] = []

    def forward(self, tokens: Tensor, domains: Tensor | None) -> Tensor:
        self.calls.append((tuple(tokens.shape), domains))
        return tokens
