"""Deep CORAL (Sun & Saenko 2016): align feature means and covariances across domains."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from radpath.algorithms.base import MODALITIES, Algorithm, Batch, modality_rows, register_algorithm
from radpath.objectives.dg import coral_penalty


class CoralSettings(BaseModel):
    """``algorithm.coral``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(1.0, ge=0, description="weight of the CORAL penalty")


@register_algorithm
class CORAL(Algorithm):
    """ERM plus the CORAL penalty between the patient features of each pair of domains."""

    name = "coral"
    settings = CoralSettings

    def extra_terms(self, out: dict[str, Tensor], batch: Batch):
        penalty = out["fused_logit"].sum() * 0.0
        for modality in MODALITIES:
            _, _, domains, features = modality_rows(out, batch, modality)
            groups = [features[domains == d] for d in domains.unique() if d >= 0]
            groups = [g for g in groups if len(g) >= 2]  # a covariance needs two samples
            if len(groups) >= 2:
                penalty = penalty + coral_penalty(groups)
        return {"coral": (self.config.coral.weight, penalty)}
