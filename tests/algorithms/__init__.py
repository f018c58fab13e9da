"""Tests of radpath.algorithms, and helpers building tiny algorithms and one-modality batches."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from radpath.algorithms import ALGORITHMS, Algorithm
from radpath.algorithms.config import AlgorithmConfig
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig

DOMAINS = ("a", "b")  # random_batch gives units the domain ids 0, 1, 0, 1, ...


def tiny_algorithm(name: str, *, seed: int = 0, domains: Sequence[str] = DOMAINS,
                   **settings: object) -> Algorithm:
    """A registered algorithm over a 32 px ``vit_test`` model with MixStyle after block 0.

    ``settings`` are :class:`AlgorithmConfig` fields (``irm=IrmSettings(...)``, ...).
    """
    torch.manual_seed(seed)
    backbone = BackboneConfig(img_size=32, histo_img_size=32, mixstyle_layers=(0,))
    model = CrossModalModel(ModelConfig(backbone=backbone, projection_dim=16, mil_hidden=16,
                                        num_grades=3))
    config = AlgorithmConfig(name=name, **settings)
    return ALGORITHMS.get(name)(model, config, domains=list(domains), seed=seed)


def only(batch: dict[str, Tensor], modality: str) -> dict[str, Tensor]:
    """A copy of ``batch`` in which no unit has the other modality."""
    other = "histo" if modality == "mammo" else "mammo"
    batch = {key: value.clone() for key, value in batch.items()}
    batch[other].zero_()
    batch[f"{other}_mask"][:] = False
    batch[f"has_{other}"][:] = False
    batch[f"{other}_domain"][:] = -1
    if other == "mammo":
        batch["lesion_known"][:] = False
    keep = batch[f"has_{modality}"]  # units left with nothing are dropped, as no loader makes them
    return {key: value[keep] for key, value in batch.items()}
