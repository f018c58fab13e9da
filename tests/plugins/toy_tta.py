"""A new test-time adaptation method in one file: its settings, its class, one decorator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from radpath.adapt.base import Batch, TTAMethod, register_tta
from radpath.adapt.tent import binary_entropy, configure_layernorm


class FusedEntropySettings(BaseModel):
    """``tta.toy_fused_entropy``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(1.0, ge=0, description="scale of the fused head's entropy loss")


@register_tta
class FusedEntropy(TTAMethod):
    """TENT on the fused head alone, its loss scaled by ``weight`` (a toy)."""

    name = "toy_fused_entropy"
    settings = FusedEntropySettings

    def trainable_parameters(self) -> list[nn.Parameter]:
        return configure_layernorm(self.algorithm, self.config.norm_scope)

    def adapt_batch(self, batch: Batch) -> dict[str, Tensor]:
        for _ in range(self.config.steps):
            logits = self.algorithm(batch)["fused_logit"]
            self.step(self.config.toy_fused_entropy.weight * binary_entropy(logits).mean())
        return self.algorithm.predict(batch)
