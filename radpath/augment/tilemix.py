"""Mixup and CutMix of H&E tiles across units, with soft malignancy targets.

DeiT trains vision transformers from scratch on ImageNet only with mixup (Zhang et al.,
ICLR 2018) and CutMix (Yun et al., ICCV 2019): both turn each pair of labelled examples
into a continuum of new ones, which a small cohort needs more than ImageNet does. Here a
unit is a bag of tiles: each labelled H&E unit draws one partner and one weight ``lam``,
and every one of its tiles is blended with (mixup), or has a box replaced by (CutMix), a
tile of the partner's. The unit's tiles and the unit itself then carry the target
``lam * y + (1 - lam) * y_partner``: the bag is the same convex mix of the two bags.

Everything runs on the batch's device with no value read back (the partners are chosen by
tensor operations), and the module owns a NumPy generator, reseeded each epoch like
MixStyle's, so two runs with one seed mix identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from radpath.augment.mixstyle import check_mixing

TileMixMode = Literal["mixup", "cutmix"]
TILE_MIX_MODES: tuple[str, ...] = ("mixup", "cutmix")
TILE_MIX_STREAM = 7113


class TileMix(nn.Module):
    """Mixes the H&E tiles of a batch across its labelled units (training only).

    Args:
        p: probability of mixing a given batch.
        alpha: parameter of the Beta(alpha, alpha) weight of a unit's own tiles.
        mode: ``mixup`` blends whole tiles; ``cutmix`` pastes a box of the partner's tile
            covering ``1 - lam`` of it (``lam`` is then the area actually kept).
        seed: seed of the module's generator.
    """

    def __init__(self, p: float = 1.0, alpha: float = 0.4, mode: TileMixMode = "mixup",
                 seed: int = 0) -> None:
        super().__init__()
        check_mixing(p, alpha, mode=(mode, TILE_MIX_MODES))
        self.p, self.alpha, self.mode = p, alpha, mode
        self.last_partner: Tensor | None = None
        self.last_lam: Tensor | None = None
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Restart the module's generator from ``seed``."""
        self.seed = seed
        # A stream of its own: MixStyle is reseeded with the same integers each epoch.
        self._rng = np.random.default_rng([seed, TILE_MIX_STREAM])

    def extra_repr(self) -> str:
        return f"p={self.p}, alpha={self.alpha}, mode={self.mode!r}, seed={self.seed}"

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The batch with mixed ``histo`` tiles and a soft ``histo_target`` (B,) float.

        A unit without tiles or label, or without a labelled partner with tiles, keeps its
        tiles and its own target. Masks and row indices are unchanged: a unit's tiles stay
        where they were, and each is mixed with one of the partner's existing tiles.
        """
        out = dict(batch)
        target = batch["malignant"].float()
        self.last_partner = self.last_lam = None
        if not self.training or self.p == 0 or self._rng.random() >= self.p:
            out["histo_target"] = target
            return out
        histo, mask = batch["histo"], batch["histo_mask"]
        size, tiles, _, height, width = histo.shape
        partner = self._partners(batch)
        lam = torch.from_numpy(self._rng.beta(self.alpha, self.alpha, size)).to(
            device=histo.device, dtype=torch.float32)
        lam = torch.where(partner == torch.arange(size, device=histo.device), 1.0, lam)
        # Tile t of a unit meets the partner's tile t modulo its tile count: the tiles of a
        # unit come first in the padded batch, so that is always one of its own.
        counts = mask.sum(dim=1).clamp(min=1)
        tile_index = torch.arange(tiles, device=histo.device)[None, :] % counts[partner][:, None]
        partner_tiles = histo[partner[:, None], tile_index]
        if self.mode == "mixup":
            weight = lam.to(histo.dtype)[:, None, None, None, None]
            mixed = weight * histo + (1 - weight) * partner_tiles
        else:
            keep, lam = self._cutmix_keep(lam, height, width)
            mixed = torch.where(keep[:, None, None], histo, partner_tiles)
        # Padding stays zero: it is not a tile, whatever reads the batch next.
        out["histo"] = torch.where(mask[:, :, None, None, None], mixed, histo)
        out["histo_target"] = lam * target + (1 - lam) * target[partner]
        self.last_partner, self.last_lam = partner, lam
        return out

    def _partners(self, batch: Mapping[str, Tensor]) -> Tensor:
        """A random other labelled unit with tiles for each such unit; itself otherwise."""
        eligible = batch["has_histo"].bool() & (batch["label"] >= 0)
        size = eligible.shape[0]
        scores = torch.from_numpy(self._rng.random((size, size))).to(eligible.device)
        allowed = eligible[:, None] & eligible[None, :]
        allowed &= ~torch.eye(size, dtype=torch.bool, device=eligible.device)
        best = torch.where(allowed, scores, -1.0).argmax(dim=1)
        own = torch.arange(size, device=eligible.device)
        return torch.where(allowed.any(dim=1), best, own)

    def _cutmix_keep(self, lam: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
        """Per unit, a (h, w) mask of the pixels kept from its own tiles, and the kept area.

        The box covers ``1 - lam`` of the tile (sides scaled by ``sqrt(1 - lam)``) around a
        uniform centre and is clipped at the border, as in CutMix; ``lam`` is recomputed
        from the box actually pasted.
        """
        size = lam.shape[0]
        device = lam.device
        centres = torch.from_numpy(self._rng.random((size, 2))).to(device=device,
                                                                     dtype=torch.float32)
        cut = (1 - lam).clamp(min=0).sqrt()
        half_h, half_w = cut * height / 2, cut * width / 2
        rows = torch.arange(height, device=device, dtype=torch.float32)[None, :] + 0.5
        cols = torch.arange(width, device=device, dtype=torch.float32)[None, :] + 0.5
        inside_rows = (rows - centres[:, :1] * height).abs() < half_h[:, None]
        inside_cols = (cols - centres[:, 1:] * width).abs() < half_w[:, None]
        box = inside_rows[:, :, None] & inside_cols[:, None, :]
        keep = ~box
        return keep, keep.float().mean(dim=(1, 2))
