"""The cross-modal model: shared ViT, per-modality MIL pooling, and the task heads.

It consumes the patient batch of :mod:`radpath.batch.keys`. A unit may hold mammograms,
histology tiles, both or (rarely) neither; every output exists for every unit, with zeros
(or the head's response to zero features) where a modality is missing, so the losses only
need the ``has_*`` and ``*_mask`` flags to select what counts.

Only valid views and tiles go through the backbone, both modalities in one pass where the
backbone allows it (:meth:`SharedBackbone.forward_tokens_many`). A modality absent from the
whole batch is not encoded at all, so some parameters get no gradient in such a step: under
DDP use Lightning's ``strategy="ddp_find_unused_parameters_true"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import pydantic
import torch
from torch import Tensor, nn

from radpath.batch.tensors import valid_rows
from radpath.models.backbone import MODALITIES, NUM_PREFIX_TOKENS, BackboneConfig, build_backbone
from radpath.models.heads import (
    BinaryHead,
    LocalisationHead,
    OrdinalHead,
    highest_logit,
    mean_tile_logit,
)
from radpath.models.mil import GatedAttentionPool

# A window is encoded when this share of its pixels is above the view's background level,
# the view's minimum plus this margin (in the normalised units the model receives: the
# engine maps [0, 1] to (x - 0.5) / 0.25, so 0.2 is 0.05 of the intensity range, far above
# the augmentation noise yet below any breast tissue left after percentile normalisation).
WINDOW_MIN_BREAST = 0.05
WINDOW_BACKGROUND_MARGIN = 0.2
# Token score (a logit) given to windows that are not encoded: clearly "no lesion".
BACKGROUND_SCORE = -10.0


class ModelConfig(pydantic.BaseModel):
    """The whole model.

    Attributes:
        backbone: the shared encoder.
        projection_dim: width of the projections used by the contrastive alignment.
        mil_hidden: width of the gated-attention pooling networks.
        num_grades: ordered grades of the ordinal head; 0 disables it.
        localisation: score mammogram patch tokens for lesion localisation.
        localisation_r: sharpness of the log-sum-exp pooling of token scores.
        bilateral: add a bilateral asymmetry feature to the pooled mammogram features:
            for units with both a left and a right view (batch key ``mammo_side``), the
            absolute difference of the mean left and mean right view features, through
            ``LayerNorm`` and ``Linear``, is added before the heads (radiologists compare
            the two breasts). Units without both sides, or batches without
            ``mammo_side``, are unchanged.
        mammo_window: side in pixels of the windows a mammogram is encoded in; 0 encodes
            the whole view. With windows, each view is cut into non-overlapping
            ``mammo_window``-pixel windows, the backbone encodes each window that holds
            breast (see :meth:`CrossModalModel.mammo_windows`), and the gated-attention
            pooling runs over the windows of all the unit's views: a lesion a few
            millimetres wide is then a large part of one window instead of a speck in the
            film, the attention picks the suspicious windows (multiple-instance learning,
            Ilse et al. 2018), and the cost grows linearly, not quadratically, with the
            film's area. Token maps are stitched back into the view's grid, so heatmaps and
            lesion maps keep their meaning. Set ``backbone.img_size`` to the window side.
        histo_score: how a unit's H&E malignancy logit is made: ``"attention"`` puts the
            gated-attention pooled feature through the histology head; ``"tile_mean"``
            averages the logits of the unit's valid tiles through the same head, as a plain
            tile classifier scores an image (every tile counts alike, so a few tiles the
            attention favours cannot decide it). The pooled feature still feeds the fused
            head and the contrastive projection either way.
        mammo_score: how a unit's mammography malignancy logit is made: ``"attention"``
            puts the gated-attention pooled feature (plus the asymmetry feature) through the
            mammography head; ``"view_max"`` takes the highest of its views' logits, each
            view's feature (the mean of its windows' features, or its CLS feature without
            windows) through the same head, as a radiologist reports the most suspicious
            film. The view logits (``mammo_view_logit``) are made either way, for the
            film-level term ``algorithm.weights.mammo_views``; the pooled feature still
            feeds the fused head and the contrastive projection. ``"window_max"`` (with
            ``mammo_window``) takes the highest logit of any of its encoded windows, each
            window's feature through the head: the film is as suspicious as its most
            suspicious window (MIL max-pooling).
        fused_modality_dropout: in training, the share of units holding both modalities
            whose fused feature (and grade) is made from one of them, drawn with equal odds
            (modality dropout, Neverova et al. 2015). The fused head then learns from
            abnormal units with one modality too, instead of only from the units that lack
            one: where those are mostly normal (pseudo-pairs by label, biopsy after a
            finding), "has H&E" would otherwise pass for evidence. Each modality's own
            head, projection and loss are untouched; identity at evaluation.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    backbone: BackboneConfig = BackboneConfig()
    projection_dim: int = pydantic.Field(64, ge=1)
    mil_hidden: int = pydantic.Field(64, ge=1)
    num_grades: int = pydantic.Field(0, ge=0)
    localisation: bool = True
    localisation_r: float = pydantic.Field(5.0, gt=0)
    bilateral: bool = False
    mammo_window: int = pydantic.Field(0, ge=0)
    histo_score: Literal["attention", "tile_mean"] = "attention"
    mammo_score: Literal["attention", "view_max", "window_max"] = "attention"
    fused_modality_dropout: float = pydantic.Field(0.0, ge=0.0, lt=1.0)

    @pydantic.model_validator(mode="after")
    def _windows_to_score(self) -> ModelConfig:
        if self.mammo_score == "window_max" and not self.mammo_window:
            raise ValueError("model.mammo_score window_max needs model.mammo_window")
        return self

    @pydantic.field_validator("num_grades")
    @classmethod
    def _not_one_grade(cls, value: int) -> int:
        if value == 1:
            raise ValueError("num_grades must be 0 (no grading) or at least 2, got 1")
        return value


@dataclass
class _Selection:
    """What one modality of a batch sends through the backbone.

    Attributes:
        source: the batch's images ``(B, K, C, H, W)``.
        mask: ``(B, K)`` valid views or tiles.
        images: the flat stack to encode ``(N, C, H, W)``; None when nothing is valid.
        domains: the domain index of each of ``images``, when the batch has domains.
        keep: with mammogram windows, which windows of the valid views are encoded.
        layout: with mammogram windows, ``(rows, cols)`` of windows per view.
        complete: every slot of ``source`` holds an image (known on the host), so the flat
            stack is ``source`` itself and features go back into the bag by a reshape
            instead of a copy: the same numbers, fewer operations.
    """

    source: Tensor
    mask: Tensor
    images: Tensor | None = None
    domains: Tensor | None = None
    keep: Tensor | None = None
    layout: tuple[int, int] | None = None
    complete: bool = False


class CrossModalModel(nn.Module):
    """Shared ViT with modality adapters, MIL pooling, and malignancy/grade/lesion heads.

    Args:
        config: the model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = build_backbone(config.backbone)
        dim = self.backbone.embed_dim
        self.pools = nn.ModuleDict(
            {m: GatedAttentionPool(dim, config.mil_hidden) for m in MODALITIES})
        self.heads = nn.ModuleDict({m: BinaryHead(dim) for m in (*MODALITIES, "fused")})
        self.projections = nn.ModuleDict(
            {m: nn.Linear(dim, config.projection_dim) for m in MODALITIES})
        self.grade_head = OrdinalHead(dim, config.num_grades) if config.num_grades else None
        self.localisation = (LocalisationHead(dim, config.mil_hidden, config.localisation_r)
                             if config.localisation else None)
        self.asymmetry = (nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
                          if config.bilateral else None)

    def encode_images(self, images: Tensor, modality: str, *, domains: Tensor | None = None,
                      mixstyle: nn.Module | None = None) -> tuple[Tensor, Tensor]:
        """CLS features ``(N, D)`` and patch tokens ``(N, gh * gw, D)`` of images ``(N, C, H, W)``.

        Args:
            images: a flat stack of images of one modality.
            modality: ``"mammo"`` or ``"histo"``.
            domains: domain index per image, for ``mixstyle``.
            mixstyle: a module called as ``mixstyle(tokens, domains)`` after the backbone's
                ``mixstyle_layers``; None skips it.
        """
        tokens = self.backbone.forward_tokens(images, modality, domains=domains,
                                              mixstyle=mixstyle)
        return tokens[:, 0], tokens[:, NUM_PREFIX_TOKENS:]

    def forward(self, batch: Mapping[str, Tensor], *,
                mixstyle: nn.Module | None = None) -> dict[str, Tensor]:
        """All outputs for a patient batch (keys in the module docstring of ``radpath.batch.keys``).

        Returns:
            ``{m}_logit`` (B,), ``fused_logit`` (B,), ``{m}_feat`` and ``fused_feat`` (B, D),
            ``{m}_proj`` (B, projection_dim), ``mammo_attention`` (B, V),
            ``histo_attention`` (B, T), ``histo_tile_logit`` (B, T) (each tile through the
            histology head, 0 where missing); ``grade_logits`` (B, K-1) with grading;
            ``token_scores`` (B, V, gh, gw) and ``view_logit`` (B, V) with localisation;
            ``mammo_view_logit`` (B, V) (each view through the mammography head, 0 where
            missing).
            ``m`` is ``mammo`` or ``histo``.
        """
        out: dict[str, Tensor] = {}
        present = []
        selected = {m: self._select(batch, m) for m in MODALITIES}
        encoded = self._encode_selected(selected, mixstyle)
        for modality in MODALITIES:
            if modality == "mammo":
                instances, mask, views, localised = self._mammo_instances(
                    batch, selected[modality], encoded.get(modality))
            else:
                instances, mask = self._bag_instances(selected[modality], encoded.get(modality))
                localised = None
            feat, attention = self.pools[modality](instances, mask)
            if modality == "mammo":
                view_mask = selected["mammo"].mask
                if self.asymmetry is not None:
                    feat = feat + self._asymmetry(views, view_mask, batch.get("mammo_side"))
                if self.config.mammo_window:
                    window_attention = attention.reshape(*views.shape[:2], -1)
                    out["mammo_window_attention"] = window_attention
                    attention = window_attention.sum(dim=-1)
            out[f"{modality}_feat"] = feat
            out[f"{modality}_attention"] = attention
            out[f"{modality}_logit"] = self.heads[modality](feat)
            out[f"{modality}_proj"] = self.projections[modality](feat)
            if modality == "mammo":
                out.update(self._view_scores(views, view_mask, out["mammo_logit"]))
                if self.config.mammo_score == "window_max":
                    out["mammo_logit"] = highest_logit(self.heads["mammo"](instances), mask,
                                                  out["mammo_logit"])
            if modality == "histo":
                # Each tile scored by the bag's own head: instance supervision for training.
                tile_logit = self.heads["histo"](instances).masked_fill(~mask, 0.0)
                out["histo_tile_logit"] = tile_logit
                if self.config.histo_score == "tile_mean":
                    out["histo_logit"] = mean_tile_logit(tile_logit, mask, out["histo_logit"])
            present.append(mask.any(dim=1))
            if localised is not None:
                out.update(localised)
        # The mean of the modality features a unit fuses: those it has, less any left out
        # by fused_modality_dropout; units with one modality still get one.
        fusing = torch.stack(present, dim=1)
        if self.training and self.config.fused_modality_dropout > 0:
            fusing = self._leave_one_out(fusing)
        weights = fusing.to(out["mammo_feat"])
        fused = sum(out[f"{m}_feat"] * weights[:, i, None] for i, m in enumerate(MODALITIES))
        fused = fused / weights.sum(dim=1).clamp(min=1)[:, None]
        out["fused_feat"] = fused
        out["fused_logit"] = self.heads["fused"](fused)
        if self.grade_head is not None:
            out["grade_logits"] = self.grade_head(fused)
        return out

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters split for separate learning rates: backbone, adapters, heads.

        ``adapters`` are the modality adapters inside the backbone (bottleneck or LoRA);
        ``heads`` are everything outside the backbone (pooling, projections, heads).
        """
        adapters = list(self.backbone.adapter_parameters())
        adapter_ids = {id(p) for p in adapters}
        backbone = [p for p in self.backbone.parameters() if id(p) not in adapter_ids]
        heads = [p for name, p in self.named_parameters() if not name.startswith("backbone.")]
        return {"backbone": backbone, "adapters": adapters, "heads": heads}

    def _select(self, batch: Mapping[str, Tensor], modality: str) -> _Selection:
        """The valid views or tiles of ``modality`` (mammogram windows holding breast,
        with ``model.mammo_window``) as one flat stack, with their domains."""
        images = batch[modality]
        units, bag = images.shape[:2]
        mask = batch[f"{modality}_mask"].bool() & batch[f"has_{modality}"].bool()[:, None]
        selection = _Selection(images, mask)
        valid = valid_rows(batch, modality)
        if not len(valid):
            return selection
        # The rows are sorted and distinct: as many as slots means every slot.
        selection.complete = len(valid) == units * bag
        selection.images = _rows(images.reshape(units * bag, *images.shape[2:]), valid,
                                 selection.complete)
        domains = batch.get(f"{modality}_domain")
        if domains is not None:
            selection.domains = _rows(domains[:, None].expand(units, bag).reshape(-1), valid,
                                      selection.complete)
        if modality == "mammo" and self.config.mammo_window:
            windows, selection.keep, selection.layout = self.mammo_windows(selection.images)
            selection.images = windows[selection.keep]
            if selection.domains is not None:
                per_view = selection.layout[0] * selection.layout[1]
                selection.domains = selection.domains.repeat_interleave(per_view)[
                    selection.keep]
        return selection

    def _encode_selected(self, selected: Mapping[str, _Selection], mixstyle: nn.Module | None
                         ) -> dict[str, tuple[Tensor, Tensor]]:
        """CLS features ``(N, D)`` and patch tokens ``(N, gh * gw, D)`` of each modality that
        has images to encode, in one backbone pass where the backbone allows it."""
        chosen = {m: s for m, s in selected.items() if s.images is not None}
        if not chosen:
            return {}
        tokens = self.backbone.forward_tokens_many(
            {m: s.images for m, s in chosen.items()},
            domains={m: s.domains for m, s in chosen.items()}, mixstyle=mixstyle)
        return {m: (t[:, 0], t[:, NUM_PREFIX_TOKENS:]) for m, t in tokens.items()}

    def _bag_instances(self, selection: _Selection, encoded: tuple[Tensor, Tensor] | None
                       ) -> tuple[Tensor, Tensor]:
        """CLS features ``(B, K, D)`` of the views or tiles (zeros where missing) and the
        valid mask ``(B, K)``."""
        units, bag = selection.mask.shape
        if encoded is None:
            zeros = selection.source.new_zeros(units, bag, self.backbone.embed_dim)
            return zeros, selection.mask
        cls = encoded[0]
        if selection.complete:
            return cls.reshape(units, bag, -1), selection.mask
        instances = cls.new_zeros(units * bag, cls.shape[1]).masked_scatter(
            selection.mask.reshape(-1, 1), cls)
        return instances.reshape(units, bag, -1), selection.mask

    def _mammo_instances(self, batch: Mapping[str, Tensor], selection: _Selection,
                         encoded: tuple[Tensor, Tensor] | None
                         ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
        """MIL instances and mask (views, or windows of views), features per view, and the
        localisation outputs (None without the head)."""
        if self.config.mammo_window:
            return self._window_instances(selection, encoded)
        instances, mask = self._bag_instances(selection, encoded)
        localised = None
        if self.localisation is not None:
            scores = self.localisation(encoded[1]) if encoded is not None else None
            localised = self._localise(batch["mammo"], mask, scores,
                                       complete=selection.complete)
        return instances, mask, instances, localised

    @property
    def window_grid(self) -> tuple[int, int] | None:
        """Token grid of one mammogram window, or None when views are encoded whole."""
        side = self.config.mammo_window
        return self.backbone.grid_size("mammo", (side, side)) if side else None

    def mammo_windows(self, views: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Cut views ``(N, C, H, W)`` into ``config.mammo_window`` windows.

        Returns:
            The windows ``(N * nh * nw, C, w, w)`` (view-major, rows then columns), which
            of them to encode ``(N * nh * nw,)`` bool, and ``(nh, nw)``. A window is
            encoded when at least :data:`WINDOW_MIN_BREAST` of its pixels are brighter than
            the view's background (its minimum plus :data:`WINDOW_BACKGROUND_MARGIN`), and
            every view keeps at least its most-filled window.
        """
        side = self.config.mammo_window
        n, channels, height, width = views.shape
        if height % side or width % side:
            raise ValueError(f"model.mammo_window ({side}) must divide the mammogram size "
                             f"({height}x{width})")
        rows, cols = height // side, width // side
        windows = (views.reshape(n, channels, rows, side, cols, side)
                   .permute(0, 2, 4, 1, 3, 5).reshape(n * rows * cols, channels, side, side))
        floor = views.amin(dim=(1, 2, 3)) + WINDOW_BACKGROUND_MARGIN
        floor = floor.repeat_interleave(rows * cols)[:, None, None, None]
        filled = (windows > floor).float().mean(dim=(1, 2, 3)).reshape(n, rows * cols)
        keep = filled >= WINDOW_MIN_BREAST
        keep[torch.arange(n, device=views.device), filled.argmax(dim=1)] = True
        return windows, keep.reshape(-1), (rows, cols)

    @staticmethod
    def stitch(window_maps: Tensor, layout: tuple[int, int]) -> Tensor:
        """Per-window maps ``(N * nh * nw, gh, gw, ...)`` as view maps
        ``(N, nh * gh, nw * gw, ...)`` (trailing dimensions, e.g. channels, carried along)."""
        rows, cols = layout
        grid_h, grid_w, *rest = window_maps.shape[1:]
        views = window_maps.shape[0] // (rows * cols)
        order = (0, 1, 3, 2, 4, *range(5, 5 + len(rest)))
        return (window_maps.reshape(views, rows, cols, grid_h, grid_w, *rest)
                .permute(order).reshape(views, rows * grid_h, cols * grid_w, *rest))

    def view_tokens(self, views: Tensor) -> Tensor:
        """Patch tokens ``(N, gh * gw, D)`` of mammogram views ``(N, 1, H, W)`` as the model
        sees them: through windows (stitched, zeros for background windows) when windowed."""
        grid = self.window_grid
        if grid is None:
            return self.encode_images(views, "mammo")[1]
        windows, keep, layout = self.mammo_windows(views)
        _, patches = self.encode_images(windows[keep], "mammo")
        stitched = self.stitch_kept(patches.reshape(-1, *grid, patches.shape[-1]), keep,
                                    layout)
        return stitched.reshape(stitched.shape[0], -1, patches.shape[-1])

    @classmethod
    def stitch_kept(cls, kept_maps: Tensor, keep: Tensor, layout: tuple[int, int],
                    fill: float = 0.0) -> Tensor:
        """Maps of the encoded windows only (``keep`` from :meth:`mammo_windows`) as view
        maps, ``fill`` over the windows left out."""
        full = kept_maps.new_full((keep.shape[0], *kept_maps.shape[1:]), fill)
        full[keep] = kept_maps
        return cls.stitch(full, layout)

    def _window_instances(self, selection: _Selection, encoded: tuple[Tensor, Tensor] | None
                          ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor] | None]:
        """Window instances ``(B, V * W, D)`` and their mask, mean window features per view
        ``(B, V, D)``, and the stitched localisation outputs (None without the head)."""
        images, view_mask = selection.source, selection.mask
        units, bag = view_mask.shape
        side = self.config.mammo_window
        per_view = (images.shape[-2] // side) * (images.shape[-1] // side)
        dim = self.backbone.embed_dim
        instances = images.new_zeros(units * bag * per_view, dim)
        keep_all = torch.zeros(units * bag * per_view, dtype=torch.bool, device=images.device)
        localised = None
        if encoded is not None:
            cls, patches = encoded
            # Slots of every window of every view; those of valid views take ``keep``.
            slots = view_mask.reshape(-1).repeat_interleave(per_view)
            slots[slots.clone()] = selection.keep
            instances = instances.to(cls).masked_scatter(slots[:, None], cls)
            keep_all = slots
            if self.localisation is not None:
                localised = self._localise(images, view_mask, *self._window_scores(
                    patches, selection.keep, selection.layout))
        elif self.localisation is not None:
            localised = self._localise(images, view_mask, None)
        instances = instances.reshape(units, bag, per_view, dim)
        keep_all = keep_all.reshape(units, bag, per_view)
        counts = keep_all.sum(dim=-1, keepdim=True).clamp(min=1).to(instances)
        views = (instances * keep_all[..., None]).sum(dim=2) / counts
        return (instances.reshape(units, bag * per_view, dim),
                keep_all.reshape(units, bag * per_view), views, localised)

    def _window_scores(self, patches: Tensor, keep: Tensor, layout: tuple[int, int]
                       ) -> tuple[Tensor, Tensor]:
        """Token scores of the encoded windows stitched into flat view maps ``(N, gh * gw)``
        (:data:`BACKGROUND_SCORE` over windows left out), and which tokens were encoded."""
        window_scores = self.localisation(patches).reshape(-1, *self.window_grid)
        scores = self.stitch_kept(window_scores, keep, layout, fill=BACKGROUND_SCORE)
        encoded = self.stitch_kept(torch.ones_like(window_scores, dtype=torch.bool), keep,
                                   layout)
        return scores.flatten(1), encoded.flatten(1)

    def _view_scores(self, views: Tensor, mask: Tensor, pooled_logit: Tensor
                     ) -> dict[str, Tensor]:
        """``mammo_view_logit`` (B, V): each view's feature through the unit's own head
        (film-level supervision), 0 where missing; with ``mammo_score: view_max`` also the
        unit's ``mammo_logit`` as its highest valid view logit (``pooled_logit`` without)."""
        view_logit = self.heads["mammo"](views).masked_fill(~mask, 0.0)
        scores = {"mammo_view_logit": view_logit}
        if self.config.mammo_score == "view_max":
            scores["mammo_logit"] = highest_logit(view_logit, mask, pooled_logit)
        return scores

    def _leave_one_out(self, present: Tensor) -> Tensor:
        """``present`` (B, M) with one modality, drawn with equal odds, left out of a
        ``fused_modality_dropout`` share of the units that have every modality."""
        units = present.shape[0]
        chosen = present.all(dim=1) & (torch.rand(units, device=present.device)
                                       < self.config.fused_modality_dropout)
        left_out = torch.randint(present.shape[1], (units,), device=present.device)
        dropped = nn.functional.one_hot(left_out, present.shape[1]).bool() & chosen[:, None]
        return present & ~dropped

    def _asymmetry(self, instances: Tensor, mask: Tensor, side: Tensor | None) -> Tensor:
        """``(B, D)``: the projected ``|mean left - mean right|`` view features of units
        having both sides, zeros for the others."""
        if side is None:
            return instances.new_zeros(instances.shape[0], instances.shape[2])
        means, present = [], []
        for code in (0, 1):
            chosen = (mask & (side == code)).to(instances)
            count = chosen.sum(dim=1, keepdim=True)
            means.append((instances * chosen[..., None]).sum(dim=1) / count.clamp(min=1))
            present.append(count[:, 0] > 0)
        both = (present[0] & present[1]).to(instances)[:, None]
        return self.asymmetry((means[0] - means[1]).abs()) * both

    def _localise(self, images: Tensor, mask: Tensor, valid_scores: Tensor | None,
                  pooled: Tensor | None = None, *, complete: bool = False
                  ) -> dict[str, Tensor]:
        """Token score maps ``(B, V, gh, gw)`` and view logits ``(B, V)`` from the flat token
        scores ``(N, gh * gw)`` of the valid views; zero for missing views.

        Args:
            images: the views ``(B, V, C, H, W)`` (for the map's grid).
            mask: ``(B, V)`` valid views.
            valid_scores: token scores of the valid views, in order; None when there are none.
            pooled: ``(N, gh * gw)`` bool, the tokens the view logit pools (all when None).
            complete: every view is valid: the scores need no scattering into place.
        """
        units, views = mask.shape
        grid = self.backbone.grid_size("mammo", tuple(images.shape[-2:]))
        if complete and valid_scores is not None:
            logit = self.localisation.image_logit(valid_scores, pooled)
            return {"token_scores": valid_scores.reshape(units, views, *grid),
                    "view_logit": logit.reshape(units, views)}
        flat_mask = mask.reshape(-1)
        scores = images.new_zeros(units * views, grid[0] * grid[1])
        view_logit = images.new_zeros(units * views)
        if valid_scores is not None:
            # Under CUDA's bf16 autocast the scores are bf16 but their log-sum-exp is float32.
            logit = self.localisation.image_logit(valid_scores, pooled)
            scores = scores.to(valid_scores).masked_scatter(flat_mask[:, None], valid_scores)
            view_logit = view_logit.to(logit).masked_scatter(flat_mask, logit)
        return {"token_scores": scores.reshape(units, views, *grid),
                "view_logit": view_logit.reshape(units, views)}


def _rows(flat: Tensor, valid: Tensor, complete: bool) -> Tensor:
    """The ``valid`` rows of ``flat``: ``flat`` itself, not a copy, when they are all."""
    return flat if complete else flat[valid]
