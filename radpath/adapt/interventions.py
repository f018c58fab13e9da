"""Nuisance interventions on a patient batch: acquisition changes, never tissue changes.

The malignancy label is caused by the tissue. How it was imaged is not a cause: exposure,
detector response, display window and noise for mammograms; stain amounts and
illumination for H&E. An *intervention* here sets one of those nuisances to a new random
value and leaves the tissue as it is, so whatever moves the features under it is, by
construction, not evidence of malignancy (causal test-time adaptation uses exactly that).

* mammograms (per image, one of): gamma ``x ** g`` (``g`` log-uniform in
  ``gamma_range``), a display-window shift, or Gaussian noise, all from
  :mod:`radpath.augment.intensity`, applied on [0, 1] after undoing the batch's
  ``(x - 0.5) / 0.25`` standardisation, and redone afterwards;
* H&E tiles (per tile, one of): HED stain jitter (Tellez et al. 2018: optical density to
  haematoxylin / eosin / DAB by the Ruifrok-Johnston matrix, H and E scaled by
  ``U(1 - sigma, 1 + sigma)`` and shifted by ``U(-bias, bias)``, back to RGB), or a
  brightness change, applied on [0, 1] RGB after undoing the ImageNet normalisation.

Missing views and tiles (``*_mask`` False, or ``has_*`` False) are left exactly as they
are (zero). The input batch is never modified: the result is a shallow copy in which only
the intervened image tensors are new. All randomness comes from the generator passed in,
so a seeded generator reproduces the interventions exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from skimage.color import hed_from_rgb, rgb_from_hed
from torch import Tensor

from radpath.adapt.base import Batch
from radpath.augment.intensity import add_noise, adjust_gamma, adjust_window
from radpath.batch.tensors import IMAGENET_MEAN, IMAGENET_STD, MAMMO_MEAN, MAMMO_STD

MODALITIES = ("mammo", "histo")
_OD_FLOOR = 1e-6  # skimage's floor on intensities before the logarithm
_HED_FROM_RGB = torch.tensor(hed_from_rgb, dtype=torch.float32)
_RGB_FROM_HED = torch.tensor(rgb_from_hed, dtype=torch.float32)


class InterventionConfig(BaseModel):
    """Strength of the nuisance interventions (see :mod:`radpath.adapt.interventions`).

    Attributes:
        gamma_range: mammogram gamma, drawn log-uniformly from this range.
        window_shift: largest move of each mammogram display-window edge (fraction of
            the [0, 1] range).
        noise_std: standard deviation of the Gaussian noise added to mammograms.
        stain_sigma: half-width of the multiplicative H and E jitter.
        stain_bias: half-width of the additive H and E jitter (optical-density units
            of skimage's ``rgb2hed``).
        brightness: half-width of the multiplicative histology brightness change.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    gamma_range: tuple[float, float] = (0.7, 1.4)
    window_shift: float = Field(0.1, ge=0.0, lt=0.5)
    noise_std: float = Field(0.02, ge=0.0)
    stain_sigma: float = Field(0.05, ge=0.0, lt=1.0)
    stain_bias: float = Field(0.03, ge=0.0)
    brightness: float = Field(0.1, ge=0.0, lt=1.0)

    @field_validator("gamma_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"gamma_range must satisfy 0 < low <= high, got {value}")
        return value


def intervene(batch: Batch, gen: torch.Generator, modality: str | Sequence[str],
              config: InterventionConfig | None = None) -> dict:
    """A copy of ``batch`` with one random nuisance intervention per image of ``modality``.

    Args:
        batch: a patient batch (keys in :mod:`radpath.batch.keys`); not modified.
        gen: the source of randomness (its device may differ from the batch's).
        modality: ``"mammo"``, ``"histo"``, or several of them.
        config: intervention strengths; None uses the defaults.

    Returns:
        A shallow copy of ``batch`` whose ``modality`` images are new tensors.
    """
    config = config or InterventionConfig()
    names = (modality,) if isinstance(modality, str) else tuple(modality)
    out = dict(batch)
    for name in names:
        if name not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got '{name}'")
        images = batch[name]
        valid = batch[f"{name}_mask"].bool() & batch[f"has_{name}"].bool()[:, None]
        change = intervene_mammo if name == "mammo" else intervene_histo
        changed = change(images, gen, config)
        out[name] = torch.where(valid[..., None, None, None], changed, images)
    return out


def intervene_mammo(images: Tensor, gen: torch.Generator, config: InterventionConfig
                    ) -> Tensor:
    """Standardised mammograms ``(..., 1, H, W)``, each given a gamma, window or noise change."""
    x = (images * MAMMO_STD + MAMMO_MEAN).clamp(0, 1)
    shape = (*images.shape[:-3], 1, 1, 1)
    kind = _choice(shape, 3, gen, images)
    low, high = (math.log(v) for v in config.gamma_range)
    gamma = torch.exp(low + _uniform(shape, gen, images) * (high - low))
    shift = config.window_shift
    window_low = (2 * _uniform(shape, gen, images) - 1) * shift
    window_high = 1 + (2 * _uniform(shape, gen, images) - 1) * shift
    noise = torch.randn(images.shape, generator=gen, device=gen.device).to(images)
    changed = torch.where(kind == 0, adjust_gamma(x, gamma),
                          torch.where(kind == 1, adjust_window(x, window_low, window_high),
                                      add_noise(x, noise, config.noise_std)))
    return (changed - MAMMO_MEAN) / MAMMO_STD


def intervene_histo(images: Tensor, gen: torch.Generator, config: InterventionConfig
                    ) -> Tensor:
    """ImageNet-normalised tiles ``(..., 3, h, w)``, each given a stain or brightness change."""
    mean = torch.as_tensor(IMAGENET_MEAN).to(images)[:, None, None]
    std = torch.as_tensor(IMAGENET_STD).to(images)[:, None, None]
    rgb = (images * std + mean).clamp(0, 1)
    lead = images.shape[:-3]
    kind = _choice((*lead, 1, 1, 1), 2, gen, images)
    # Only H and E move; DAB (absent from H&E) keeps alpha = 1, beta = 0.
    alpha = torch.ones(*lead, 3).to(images)
    beta = torch.zeros(*lead, 3).to(images)
    alpha[..., :2] = 1 + (2 * _uniform((*lead, 2), gen, images) - 1) * config.stain_sigma
    beta[..., :2] = (2 * _uniform((*lead, 2), gen, images) - 1) * config.stain_bias
    factor = 1 + (2 * _uniform((*lead, 1, 1, 1), gen, images) - 1) * config.brightness
    changed = torch.where(kind == 0, adjust_hed(rgb, alpha, beta),
                          adjust_brightness(rgb, factor))
    return (changed - mean) / std


def rgb_to_hed(rgb: Tensor) -> Tensor:
    """Stain amounts ``(..., 3, h, w)`` (H, E, DAB) of RGB ``(..., 3, h, w)`` in [0, 1].

    skimage's ``rgb2hed`` (Ruifrok-Johnston) without its clamp at zero, so that
    :func:`hed_to_rgb` inverts it exactly, as :func:`radpath.data.histo.hed_jitter` does.
    """
    od = torch.log(rgb.clamp(min=_OD_FLOOR)) / math.log(_OD_FLOOR)
    return torch.einsum("...chw,cd->...dhw", od, _HED_FROM_RGB.to(rgb))


def hed_to_rgb(hed: Tensor) -> Tensor:
    """RGB ``(..., 3, h, w)`` in [0, 1] of stain amounts (skimage's ``hed2rgb``)."""
    od = torch.einsum("...dhw,dc->...chw", hed, _RGB_FROM_HED.to(hed))
    return torch.exp(od * math.log(_OD_FLOOR)).clamp(0, 1)


def adjust_hed(rgb: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """HED stain jitter of RGB ``(..., 3, h, w)``: stain ``s`` becomes ``alpha s + beta``.

    Args:
        rgb: images in [0, 1].
        alpha: ``(..., 3)`` scale per stain (H, E, DAB); ones and zeros are the identity.
        beta: ``(..., 3)`` shift per stain.
    """
    hed = rgb_to_hed(rgb) * alpha[..., None, None] + beta[..., None, None]
    return hed_to_rgb(hed)


def adjust_brightness(rgb: Tensor, factor: Tensor | float) -> Tensor:
    """RGB in [0, 1] scaled by ``factor`` (illumination), clipped to [0, 1]."""
    return (rgb * factor).clamp(0, 1)


def _uniform(shape: tuple[int, ...], gen: torch.Generator, like: Tensor) -> Tensor:
    """U[0, 1) numbers drawn on the generator's device, then moved to ``like``'s."""
    return torch.rand(shape, generator=gen, device=gen.device).to(like)


def _choice(shape: tuple[int, ...], n: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """Integers uniform in ``0..n-1`` on ``like``'s device."""
    values = torch.randint(0, n, shape, generator=gen, device=gen.device)
    return values.to(like.device)
