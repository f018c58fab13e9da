"""A new DG algorithm in one file: its settings, its class, one decorator. Nothing else in
radpath names it; importing this file registers it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from radpath.algorithms.base import Algorithm, Batch, register_algorithm


class ShrinkSettings(BaseModel):
    """``algorithm.toy_shrink``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(0.5, ge=0, description="weight of the squared fused logit")


@register_algorithm
class Shrink(Algorithm):
    """ERM plus a penalty on the squared fused logit (a toy: it pulls predictions to 0.5)."""

    name = "toy_shrink"
    settings = ShrinkSettings

    def extra_terms(self, out: dict[str, Tensor], batch: Batch):
        return {"shrink": (self.config.toy_shrink.weight, out["fused_logit"].pow(2).mean())}
