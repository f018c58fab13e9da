"""The cross-modal model: shared ViT, per-modality MIL pooling, and the task heads.

It consumes the patient batch of :mod:`radpath.engine.batch`. A unit may hold mammograms,
histology tiles, both or (rarely) neither; every output exists for every unit, with zeros
(or the head's response to zero features) where a modality is missing, so the losses only
need the ``has_*`` and ``*_mask`` flags to select what counts.

Only valid views and tiles go through the backbone. A modality absent from the whole batch
is not encoded at all, so some parameters get no gradient in such a step: under DDP use
Lightning's ``strategy="ddp_find_unused_parameters_true"``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pydantic
import torch
from torch import Tensor, nn

from radpath.models.backbone import MODALITIES, NUM_PREFIX_TOKENS, BackboneConfig, SharedBackbone
from radpath.models.heads import BinaryHead, LocalisationHead, OrdinalHead
from radpath.models.mil import GatedAttentionPool


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
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    backbone: BackboneConfig = BackboneConfig()
    projection_dim: int = pydantic.Field(64, ge=1)
    mil_hidden: int = pydantic.Field(64, ge=1)
    num_grades: int = pydantic.Field(0, ge=0)
    localisation: bool = True
    localisation_r: float = pydantic.Field(5.0, gt=0)
    bilateral: bool = False

    @pydantic.field_validator("num_grades")
    @classmethod
    def _not_one_grade(cls, value: int) -> int:
        if value == 1:
            raise ValueError("num_grades must be 0 (no grading) or at least 2, got 1")
        return value


class CrossModalModel(nn.Module):
    """Shared ViT with modality adapters, MIL pooling, and malignancy/grade/lesion heads.

    Args:
        config: the model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = SharedBackbone(config.backbone)
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
        """All outputs for a patient batch (keys in the module docstring of ``engine.batch``).

        Returns:
            ``{m}_logit`` (B,), ``fused_logit`` (B,), ``{m}_feat`` and ``fused_feat`` (B, D),
            ``{m}_proj`` (B, projection_dim), ``mammo_attention`` (B, V),
            ``histo_attention`` (B, T); ``grade_logits`` (B, K-1) with grading;
            ``token_scores`` (B, V, gh, gw) and ``view_logit`` (B, V) with localisation.
            ``m`` is ``mammo`` or ``histo``.
        """
        out: dict[str, Tensor] = {}
        present = []
        for modality in MODALITIES:
            instances, mask, patches = self._encode_bag(batch, modality, mixstyle)
            feat, attention = self.pools[modality](instances, mask)
            if modality == "mammo" and self.asymmetry is not None:
                feat = feat + self._asymmetry(instances, mask, batch.get("mammo_side"))
            out[f"{modality}_feat"] = feat
            out[f"{modality}_attention"] = attention
            out[f"{modality}_logit"] = self.heads[modality](feat)
            out[f"{modality}_proj"] = self.projections[modality](feat)
            present.append(mask.any(dim=1))
            if modality == "mammo" and self.localisation is not None:
                out.update(self._localise(batch["mammo"], mask, patches))
        # Missing modalities pool to zeros, so the sum over modalities divided by the count
        # present is the mean of the available ones; units with one modality still get one.
        count = torch.stack(present, dim=1).sum(dim=1).clamp(min=1)
        fused = (out["mammo_feat"] + out["histo_feat"]) / count[:, None].to(out["mammo_feat"])
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

    def _encode_bag(self, batch: Mapping[str, Tensor], modality: str,
                    mixstyle: nn.Module | None) -> tuple[Tensor, Tensor, Tensor | None]:
        """CLS features ``(B, K, D)`` (zeros where missing), the valid mask ``(B, K)``, and
        the patch tokens of the valid images only (None when there are none)."""
        images = batch[modality]
        units, bag = images.shape[:2]
        mask = batch[f"{modality}_mask"].bool() & batch[f"has_{modality}"].bool()[:, None]
        flat_mask = mask.reshape(-1)
        if not bool(flat_mask.any()):
            return images.new_zeros(units, bag, self.backbone.embed_dim), mask, None
        flat = images.reshape(units * bag, *images.shape[2:])[flat_mask]
        domains = batch.get(f"{modality}_domain")
        if domains is not None:
            domains = domains[:, None].expand(units, bag).reshape(-1)[flat_mask]
        cls, patches = self.encode_images(flat, modality, domains=domains, mixstyle=mixstyle)
        instances = cls.new_zeros(units * bag, cls.shape[1]).masked_scatter(
            flat_mask[:, None], cls)
        return instances.reshape(units, bag, -1), mask, patches

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

    def _localise(self, images: Tensor, mask: Tensor, patches: Tensor | None
                  ) -> dict[str, Tensor]:
        """Token score maps ``(B, V, gh, gw)`` and view logits ``(B, V)``, zero if missing."""
        units, views = mask.shape
        grid = self.backbone.grid_size("mammo", tuple(images.shape[-2:]))
        flat_mask = mask.reshape(-1)
        scores = images.new_zeros(units * views, grid[0] * grid[1])
        view_logit = images.new_zeros(units * views)
        if patches is not None:
            valid_scores = self.localisation(patches)
            scores = scores.to(valid_scores).masked_scatter(flat_mask[:, None], valid_scores)
            view_logit = view_logit.to(valid_scores).masked_scatter(
                flat_mask, self.localisation.image_logit(valid_scores))
        return {"token_scores": scores.reshape(units, views, *grid),
                "view_logit": view_logit.reshape(units, views)}
