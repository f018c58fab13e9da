"""The paper's recipe: contrastive cross-modal alignment + MixStyle + IRM.

Patient embeddings of the two modalities are pulled together by a symmetric InfoNCE loss
(label-aware when the pairs are pseudo-pairs), token statistics are mixed across domains
in the shallow blocks, and the IRMv1 penalty asks each modality's classifier to be optimal
in every domain at once.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from radpath.algorithms.base import Algorithm, Batch, register_algorithm
from radpath.algorithms.irm import IrmMixin, irm_term
from radpath.objectives.contrastive import SymmetricInfoNCE


class PaperSettings(BaseModel):
    """``algorithm.paper``; IRM's and MixStyle's settings are read from ``algorithm.irm``
    and ``algorithm.mixstyle``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.07, gt=0, description="initial contrastive temperature")


@register_algorithm
class Paper(IrmMixin, Algorithm):
    """Contrastive alignment + MixStyle + IRM on the shared-backbone model."""

    name = "paper"
    settings = PaperSettings
    uses_mixstyle = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_irm()
        self.contrastive = SymmetricInfoNCE(init_temperature=self.config.paper.temperature)

    def extra_terms(self, out: dict[str, Tensor], batch: Batch):
        # Units lacking a modality count as unpaired: the loss masks them out.
        irm = (self.irm_weight(), irm_term(self, out, batch))
        if self.config.weights.contrastive == 0:
            # Switched off: skip the B x B similarities (100M at B = 10,000).
            return {"contrastive": (0.0, out["fused_logit"].sum() * 0.0), "irm": irm}
        both = batch["has_mammo"].bool() & batch["has_histo"].bool()
        pairing = torch.where(both, batch["pairing"], 0)
        alignment = self.contrastive(out["mammo_proj"], out["histo_proj"], batch["label"],
                                     pairing)
        return {"contrastive": (self.config.weights.contrastive, alignment), "irm": irm}

    def after_step(self) -> None:
        self.contrastive.clamp_()
