"""Group DRO (Sagawa et al. 2020): minimise the worst (modality, domain) group's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from radpath.algorithms.base import MODALITIES, Algorithm, Batch, modality_rows, register_algorithm
from radpath.objectives.dg import GroupDRO as GroupDROLoss


class GroupDROSettings(BaseModel):
    """``algorithm.groupdro``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eta: float = Field(0.01, gt=0, description="step size of the group weights (DomainBed)")


@register_algorithm
class GroupDRO(Algorithm):
    """Replaces the per-modality losses by a q-weighted sum over (modality, domain) groups.

    The group weights follow exponentiated gradient ascent on the group losses and live in
    a buffer, so they resume with a checkpoint.
    """

    name = "groupdro"
    settings = GroupDROSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.domain_count = max(1, len(self.domains))
        self.robust = GroupDROLoss(len(MODALITIES) * self.domain_count,
                                   eta=self.config.groupdro.eta)

    def supervised_terms(self, out: dict[str, Tensor], batch: Batch):
        terms = super().supervised_terms(out, batch)
        for modality in MODALITIES:  # the robust loss below replaces these two
            terms.pop(f"{modality}_bce")
        terms["group_dro"] = (1.0, self._robust_loss(out, batch))
        return terms

    def _robust_loss(self, out: dict[str, Tensor], batch: Batch) -> Tensor:
        groups = len(MODALITIES) * self.domain_count
        losses = out["fused_logit"].new_zeros(groups)
        present = torch.zeros(groups, dtype=torch.bool, device=losses.device)
        for m_index, modality in enumerate(MODALITIES):
            logits, targets, domains, _ = modality_rows(out, batch, modality)
            for domain in domains.unique().tolist():
                if domain < 0:
                    continue
                chosen = domains == domain
                group = m_index * self.domain_count + domain
                losses = losses.index_put(
                    (torch.tensor([group], device=losses.device),),
                    F.binary_cross_entropy_with_logits(logits[chosen], targets[chosen])[None])
                present[group] = True
        if not bool(present.any()):
            return out["fused_logit"].sum() * 0.0
        return self.robust(losses, present)
