"""Tests of radpath.adapt: a tiny trained-from-scratch algorithm and parameter checks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radpath.algorithms import ALGORITHMS
from radpath.algorithms.config import AlgorithmConfig
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig


def tiny_algorithm(seed: int = 0, num_grades: int = 3) -> nn.Module:
    """An ERM algorithm around the 2-block, 64-wide test ViT on 32-pixel images."""
    torch.manual_seed(seed)
    config = ModelConfig(backbone=BackboneConfig(img_size=32, histo_img_size=32),
                         projection_dim=16, num_grades=num_grades)
    return ALGORITHMS.get("erm")(CrossModalModel(config), AlgorithmConfig(),
                                 domains=["a", "b"])


def state_copy(module: nn.Module) -> dict[str, Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed_keys(before: dict[str, Tensor], module: nn.Module) -> set[str]:
    """Names of the state entries of ``module`` that are not bit-identical to ``before``."""
    after = module.state_dict()
    assert after.keys() == before.keys()
    return {name for name in before if not torch.equal(before[name], after[name])}


def layernorm_names(module: nn.Module) -> set[str]:
    """State names of every LayerNorm's affine parameters in ``module``."""
    return {f"{prefix}.{name}" for prefix, child in module.named_modules()
            if isinstance(child, nn.LayerNorm)
            for name, _ in child.named_parameters(recurse=False)}
