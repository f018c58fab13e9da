"""Training-time augmentation: MixStyle for tokens, mammogram intensity changes, and
mixup/CutMix of H&E tiles across units; and graded nuisance corruptions of stored images
(:mod:`radpath.augment.corruptions`) for testing test-time adaptation."""

from radpath.augment.intensity import (
    MammoIntensityAugment,
    add_noise,
    adjust_gamma,
    adjust_window,
    gaussian_noise,
    random_gamma,
    random_window,
)
from radpath.augment.mixstyle import TokenMixStyle, cross_domain_partners
from radpath.augment.tilemix import TileMix

__all__ = [
    "MammoIntensityAugment",
    "TileMix",
    "TokenMixStyle",
    "add_noise",
    "adjust_gamma",
    "adjust_window",
    "cross_domain_partners",
    "gaussian_noise",
    "random_gamma",
    "random_window",
]
