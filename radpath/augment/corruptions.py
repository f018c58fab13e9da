"""Nuisance shifts at graded severities, for testing test-time adaptation where the label is
untouched (as ImageNet-C grades its corruptions 1 to 5).

Each corruption is one site-wide change of how images are acquired: the same parameters for
every image at a severity (a new scanner, a new stain batch), with per-image randomness only
where the physics has it (sensor noise). They act on images as stored, before radpath's
preprocessing, so whatever that preprocessing undoes (a monotone gamma largely survives
percentile normalisation and CLAHE; clipping does not) is part of the measurement.

Mammograms are greyscale floats in [0, 1]; H&E tiles RGB floats in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.color import hed_from_rgb, rgb_from_hed

from radpath.errors import RadpathError
from radpath.registry import Registry

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Corruption:
    """A nuisance shift of one modality: ``apply(image, severity, rng)``."""

    name: str
    modality: str
    apply: Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
    description: str

    def __call__(self, image: np.ndarray, severity: int, rng: np.random.Generator
                 ) -> np.ndarray:
        if severity not in SEVERITIES:
            raise RadpathError(f"corruption '{self.name}': severity must be one of "
                               f"{SEVERITIES}, got {severity}")
        out = self.apply(np.asarray(image, dtype=np.float32), severity, rng)
        return np.clip(out, 0.0, 1.0).astype(np.float32)


CORRUPTIONS: Registry[Corruption] = Registry("corruption")


def _register(name: str, modality: str, description: str):
    def wrap(function):
        CORRUPTIONS.register(name)(Corruption(name, modality, function, description))
        return function
    return wrap


@_register("gamma", "mammo", "intensity raised to a power: 1.25, 1.5, 2, 2.5, 3")
def _gamma(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    return np.power(image, (1.25, 1.5, 2.0, 2.5, 3.0)[severity - 1])


@_register("window", "mammo", "a narrower display window: the top 10–50% of the range clipped")
def _window(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # Dense tissue and lesions are the bright end: clipping it erases their contrast.
    high = 1.0 - 0.1 * severity
    return np.minimum(image, high) / high


@_register("noise", "mammo", "additive Gaussian noise, sd 0.01, 0.02, 0.04, 0.06, 0.08")
def _noise(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sd = (0.01, 0.02, 0.04, 0.06, 0.08)[severity - 1]
    return image + rng.normal(0.0, sd, image.shape).astype(np.float32)


@_register("stain", "histo", "haematoxylin up and eosin down in HED space: 10–50%")
def _stain(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    # Tellez et al.'s HED perturbation, one batch-wide shift: darker nuclei, paler stroma.
    # Done in optical density with Ruifrok & Johnston's matrix and no clipping of the
    # concentrations (skimage's rgb2hed clips them, so its round trip is not exact).
    density = -np.log(np.maximum(image, 1.0 / 255.0))
    hed = density @ hed_from_rgb
    change = 0.1 * severity
    hed[..., 0] *= 1.0 + change
    hed[..., 1] *= 1.0 - change
    return np.exp(-(hed @ rgb_from_hed))


@_register("blur", "histo", "Gaussian defocus blur, sigma 0.5, 1, 1.5, 2, 3 px")
def _blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    sigma = (0.5, 1.0, 1.5, 2.0, 3.0)[severity - 1]
    return cv2.GaussianBlur(image, (0, 0), sigma)


def corruptions_of(modality: str) -> list[str]:
    """The registered corruption names of ``modality``, sorted."""
    return [name for name in CORRUPTIONS.names() if CORRUPTIONS.get(name).modality == modality]
