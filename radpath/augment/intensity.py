"""Mammogram intensity changes that alter acquisition, not anatomy.

Exposure, detector response and display windowing differ between institutions but do
not cause the label. These functions change exactly those nuisances, on (..., H, W)
float images scaled to [0, 1] (the preprocessed mammograms, before any standardisation).
They serve twice: as training augmentation, and as the nuisance interventions of causal
test-time adaptation. Each ``adjust_*`` function applies a given change; each
``random_*`` function draws one change per image from the generator passed in, so a
seeded generator reproduces it exactly. All outputs stay in [0, 1].
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _draw(shape: tuple[int, ...], gen: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``gen`` on its own device, moved to ``x``'s."""
    values = torch.rand(shape, generator=gen, device=gen.device)
    return values.to(device=x.device, dtype=x.dtype)


def _per_image_shape(x: torch.Tensor) -> tuple[int, ...]:
    """One value per image of (..., H, W), broadcastable against ``x``."""
    if x.ndim < 2:
        raise ValueError(f"images must be (..., H, W), got shape {tuple(x.shape)}")
    return (*x.shape[:-2], 1, 1)


def adjust_gamma(x: torch.Tensor, gamma: torch.Tensor | float) -> torch.Tensor:
    """``x ** gamma`` on [0, 1]: a detector or exposure response curve (1 is identity)."""
    return x.clamp(0, 1) ** gamma


def adjust_window(x: torch.Tensor, low: torch.Tensor | float,
                  high: torch.Tensor | float) -> torch.Tensor:
    """Re-window [low, high] to [0, 1], clipping outside: a display (VOI) window change.

    ``low = 0, high = 1`` is the identity; a narrower window raises contrast, a shifted
    one changes brightness.
    """
    return ((x.clamp(0, 1) - low) / (high - low)).clamp(0, 1)


def add_noise(x: torch.Tensor, noise: torch.Tensor, std: float) -> torch.Tensor:
    """Add ``std``-scaled noise to ``x`` and clip to [0, 1] (quantum / electronic noise)."""
    return (x + std * noise).clamp(0, 1)


def random_gamma(x: torch.Tensor, gen: torch.Generator, low: float = 0.7,
                 high: float = 1.5) -> torch.Tensor:
    """Apply a per-image gamma drawn log-uniformly from [low, high].

    Log-uniform makes a gamma and its inverse equally likely.
    """
    if not 0 < low <= high:
        raise ValueError(f"gamma range must satisfy 0 < low <= high, got [{low}, {high}]")
    u = _draw(_per_image_shape(x), gen, x)
    gamma = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    return adjust_gamma(x, gamma)


def random_window(x: torch.Tensor, gen: torch.Generator, shift: float = 0.1) -> torch.Tensor:
    """Move each window edge by up to ``shift`` (fraction of the range), per image.

    Both edges move independently, which changes brightness and contrast together.
    """
    if not 0 <= shift < 0.5:
        raise ValueError(f"window shift must be in [0, 0.5), got {shift}")
    shape = _per_image_shape(x)
    low = (2 * _draw(shape, gen, x) - 1) * shift
    high = 1 + (2 * _draw(shape, gen, x) - 1) * shift
    return adjust_window(x, low, high)


def gaussian_noise(x: torch.Tensor, gen: torch.Generator, std: float = 0.02) -> torch.Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``std``, clipped to [0, 1]."""
    if std < 0:
        raise ValueError(f"noise std must be non-negative, got {std}")
    noise = torch.randn(x.shape, generator=gen, device=gen.device)
    return add_noise(x, noise.to(device=x.device, dtype=x.dtype), std)


class MammoIntensityAugment(nn.Module):
    """Random gamma, window and noise, each applied to a batch with its own probability.

    Identity in eval mode. The generator is the module's own, so a seeded module
    reproduces its augmentations.

    Args:
        p_gamma: probability of a gamma change.
        p_window: probability of a window change.
        p_noise: probability of added noise.
        gamma_range: (low, high) range of gamma.
        window_shift: maximum shift of each window edge.
        noise_std: standard deviation of the noise.
        seed: seed of the module's generator; None draws one from torch's global
            generator.
    """

    def __init__(self, p_gamma: float = 0.5, p_window: float = 0.5, p_noise: float = 0.3,
                 gamma_range: tuple[float, float] = (0.7, 1.5), window_shift: float = 0.1,
                 noise_std: float = 0.02, seed: int | None = None) -> None:
        super().__init__()
        for name, p in (("p_gamma", p_gamma), ("p_window", p_window), ("p_noise", p_noise)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.p_gamma, self.p_window, self.p_noise = p_gamma, p_window, p_noise
        self.gamma_range, self.window_shift, self.noise_std = gamma_range, window_shift, noise_std
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(seed)

    def _happens(self, p: float) -> bool:
        return p > 0 and float(torch.rand((), generator=self.generator)) < p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment (..., H, W) images in [0, 1]; ``x`` unchanged in eval mode."""
        if not self.training:
            return x
        if self._happens(self.p_gamma):
            x = random_gamma(x, self.generator, *self.gamma_range)
        if self._happens(self.p_window):
            x = random_window(x, self.generator, self.window_shift)
        if self._happens(self.p_noise):
            x = gaussian_noise(x, self.generator, self.noise_std)
        return x
