"""Training-time augmentation: MixStyle for tokens and mammogram intensity changes."""

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

__all__ = [
    "MammoIntensityAugment",
    "TokenMixStyle",
    "add_noise",
    "adjust_gamma",
    "adjust_window",
    "cross_domain_partners",
    "gaussian_noise",
    "random_gamma",
    "random_window",
]
