"""Training steps under CUDA's bf16 autocast policy, emulated on the CPU (tests/cuda_autocast)."""

from __future__ import annotations

import math

import pytest
import torch

from radpath.algorithms import ALGORITHMS
from radpath.algorithms.base import MODALITIES
from radpath.algorithms.config import AlgorithmConfig
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig
from tests.algorithms import tiny_algorithm
from tests.cuda_autocast import cuda_bf16_autocast
from tests.models import random_batch


def test_the_emulated_policy_gives_cudas_output_dtypes() -> None:
    x = torch.randn(4, 8)
    with cuda_bf16_autocast():
        product = x @ x.T
        pooled = torch.logsumexp(product, dim=1)
        probabilities = product.softmax(dim=1)
        joined = torch.cat([product, pooled[:, None]], dim=1)
        in_place = product.clone().exp_()
        explicit = product.sum(dim=1, dtype=torch.bfloat16)
    assert product.dtype == torch.bfloat16
    assert pooled.dtype == probabilities.dtype == joined.dtype == torch.float32
    assert in_place.dtype == explicit.dtype == torch.bfloat16  # not eligible for autocast
    assert torch.logsumexp(product, dim=1).dtype == torch.bfloat16  # nothing changes outside


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_update_and_predict_run_under_cuda_bf16_autocast(name: str) -> None:
    algorithm = tiny_algorithm(name)
    with cuda_bf16_autocast():
        logs = algorithm.update(random_batch())
        predictions = algorithm.predict(random_batch(seed=1))
    assert all(math.isfinite(value) for value in logs.values()), logs
    for modality in (*MODALITIES, "fused"):
        prob = predictions[f"{modality}_prob"]
        assert torch.isfinite(prob.float()).all() and ((prob >= 0) & (prob <= 1)).all()
    assert all(p.dtype == torch.float32 for p in algorithm.parameters())


# The model options of configs/real-cpu.yaml and the ablations, each a path of its own.
MODEL_OPTIONS = {
    "windows+bilateral": {"mammo_window": 16, "bilateral": True},
    "tile_mean": {"histo_score": "tile_mean"},
    "fused_dropout": {"fused_modality_dropout": 0.5},
    "lora": {"backbone": BackboneConfig(img_size=32, histo_img_size=32, adapter="lora")},
    "unshared": {"backbone": BackboneConfig(img_size=32, histo_img_size=32, shared=False)},
}


@pytest.mark.parametrize("option", MODEL_OPTIONS)
def test_model_options_train_under_cuda_bf16_autocast(option: str) -> None:
    torch.manual_seed(0)
    settings = {"backbone": BackboneConfig(img_size=32, histo_img_size=32),
                "projection_dim": 16, "mil_hidden": 16, **MODEL_OPTIONS[option]}
    model = CrossModalModel(ModelConfig(**settings))
    algorithm = ALGORITHMS.get("paper")(
        model, AlgorithmConfig(name="paper", weights={"histo_tiles": 1.0}), domains=["a", "b"])
    with cuda_bf16_autocast():
        logs = algorithm.update(random_batch())
    assert all(math.isfinite(value) for value in logs.values()), logs
