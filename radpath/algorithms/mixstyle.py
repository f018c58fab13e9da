"""MixStyle (Zhou et al. 2021) on the tokens of the backbone's shallow blocks."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from radpath.algorithms.base import Algorithm, register_algorithm


class MixStyleSettings(BaseModel):
    """MixStyle on ViT tokens of the shallow blocks listed in model.backbone.mixstyle_layers
    (``algorithm.mixstyle``; the paper's algorithm reads them too)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p: float = Field(0.5, ge=0, le=1, description="probability of mixing a batch")
    alpha: float = Field(0.1, gt=0, description="Beta(alpha, alpha) of the mixing weight")
    mix: Literal["random", "crossdomain"] = Field(
        "crossdomain", description="partners drawn at random, or from other domains")


@register_algorithm
class MixStyle(Algorithm):
    """ERM on feature statistics mixed across samples (and domains) during training.

    The blocks that mix are ``model.backbone.mixstyle_layers``; MixStyle is the identity at
    evaluation.
    """

    name = "mixstyle"
    settings = MixStyleSettings
    uses_mixstyle = True
