"""MixStyle (Zhou et al. 2021) on the tokens of the backbone's shallow blocks."""

from radpath.algorithms.base import Algorithm, register_algorithm


@register_algorithm("mixstyle")
class MixStyle(Algorithm):
    """ERM on feature statistics mixed across samples (and domains) during training.

    The blocks that mix are ``model.backbone.mixstyle_layers``; MixStyle is the identity at
    evaluation.
    """

    uses_mixstyle = True
