"""The test-time adapter contract: ``adapt_and_predict(batch)`` on a private copy.

A :class:`TestTimeAdapter` wraps a trained :class:`~radpath.algorithms.base.Algorithm`
and returns the same prediction dictionary as ``Algorithm.predict``, after adapting to
each unlabelled test batch. Three promises hold for every adapter:

* it works on a **deep copy** of the algorithm: the caller's object, and any checkpoint
  on disk, are never touched;
* ``mode="episodic"`` restores the source weights before every batch, so a batch's
  prediction does not depend on what came before; ``mode="online"`` keeps adapting;
* :meth:`TestTimeAdapter.reset` restores the saved source state exactly: every parameter
  and buffer, the optimiser state, and the method's own state (running averages, random
  generators).

The adapter stays in eval mode while it adapts: a ViT has LayerNorm, which keeps no batch
statistics, so unlike TENT on BatchNorm nets there is nothing to gain from train mode,
and dropout / stochastic depth would only add noise to the entropy gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from radpath.registry import Registry

Batch = Mapping[str, Any]
Modality = Literal["mammo", "histo"]


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


class TTAConfig(BaseModel):
    """Which test-time adapter runs, and its hyperparameters.

    Attributes:
        name: a registered adapter: ``none``, ``tent``, ``sar`` or ``causal``.
        mode: ``episodic`` resets to the source weights before every batch; ``online``
            keeps adapting across batches.
        steps: optimisation steps per batch (0 predicts without adapting).
        lr: learning rate of the LayerNorm affine parameters.
        optimizer: ``adam`` or ``sgd`` (with ``momentum``).
        momentum: SGD momentum.
        modalities: the modalities adapted: their per-modality heads join the entropy
            loss (tent, sar, causal with ``adapt_norm``), and causal intervenes on them
            and projects their nuisance directions out. The fused head always counts.
        norm_scope: ``backbone`` adapts the LayerNorms of the shared encoder and its
            modality adapters (TENT's choice: normalisation layers of the feature
            extractor); ``model`` adds those of the prediction heads.
        e0: SAR's entropy margin factor: only samples with entropy below
            ``e0 * ln 2`` (binary heads, C = 2 classes) contribute.
        reset_threshold: reset to the source weights when the moving average of the
            (filtered) entropy loss falls below ``reset_threshold * ln 2``, a sign of
            collapse. 0.03 is SAR's absolute 0.2 for 1000 classes as a fraction of
            ``ln 1000``; 0.2 would be far stricter for two classes (it fires on any
            model whose reliable predictions average p > 0.97).
        ema_momentum: weight of the past in that moving average (SAR: 0.9).
        sam: take a sharpness-aware (SAM) step, as SAR does.
        sam_rho: SAM's neighbourhood radius.
        n_interventions: causal: intervened versions of each batch (K).
        n_directions: causal: nuisance directions removed per head (k).
        nuisance_ratio: causal: a direction is removed only when the variance the
            interventions cause along it is at least this multiple of the variance between
            cases along it: directions where cases differ more than their imaging does
            carry content, and are kept (0 removes all ``k``).
        adapt_norm: causal: also adapt LayerNorms on the samples the interventions agree
            on (entropy minimisation, with SAR's collapse reset).
        interventions: strengths of the causal interventions.
        seed: seed of the intervention generator (restored by ``reset``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "tent"
    mode: Literal["episodic", "online"] = "episodic"
    steps: int = Field(1, ge=0)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    modalities: tuple[Modality, ...] = ("mammo", "histo")
    norm_scope: Literal["backbone", "model"] = "backbone"
    e0: float = Field(0.4, gt=0)
    reset_threshold: float = Field(0.03, ge=0)
    ema_momentum: float = Field(0.9, ge=0, lt=1)
    sam: bool = False
    sam_rho: float = Field(0.05, gt=0)
    n_interventions: int = Field(8, ge=1)
    n_directions: int = Field(4, ge=0)
    nuisance_ratio: float = Field(1.0, ge=0)
    adapt_norm: bool = False
    interventions: InterventionConfig = InterventionConfig()
    seed: int = 0

    @field_validator("modalities")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"modalities must not repeat, got {value}")
        return value


class TestTimeAdapter(nn.Module):
    """Base class: a private copy of the algorithm, its source state, and the modes.

    Subclasses override :meth:`trainable_parameters` (what adapts) and
    :meth:`adapt_batch` (adapt on one batch, then predict it); :meth:`reset_method_state`
    clears any state of their own.

    Args:
        algorithm: the trained algorithm; it is deep-copied, never modified.
        config: the adapter settings.

    Attributes:
        algorithm: the private copy being adapted.
        optimizer: the optimiser of :meth:`trainable_parameters`, or None.
        resets: how many times the source state was restored (episodic resets included).
    """

    __test__: ClassVar[bool] = False  # not a pytest test class, whatever its name

    def __init__(self, algorithm: nn.Module, config: TTAConfig) -> None:
        super().__init__()
        self.config = config
        self.algorithm = copy.deepcopy(algorithm).eval()
        params = self.trainable_parameters()
        self.optimizer = make_optimizer(params, config) if params else None
        self.resets = 0
        self._source_model = {k: v.detach().clone()
                              for k, v in self.algorithm.state_dict().items()}
        self._source_optimizer = (copy.deepcopy(self.optimizer.state_dict())
                                  if self.optimizer is not None else None)
        self.reset_method_state()

    @property
    def mode(self) -> Literal["episodic", "online"]:
        return self.config.mode

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Hook: freeze the copy as needed and return what the optimiser updates."""
        self.algorithm.requires_grad_(False)
        return []

    def reset_method_state(self) -> None:
        """Hook: clear the method's own state (moving averages, generators)."""

    def adapt_batch(self, batch: Batch) -> dict[str, Tensor]:
        """Hook: adapt on ``batch`` and return its predictions."""
        return self.algorithm.predict(batch)

    def adapt_and_predict(self, batch: Batch) -> dict[str, Tensor]:
        """Predictions for ``batch`` (the keys of ``Algorithm.predict``) after adapting.

        Adaptation needs gradients, so it runs under ``torch.enable_grad`` even inside a
        ``torch.no_grad`` block (not inside ``torch.inference_mode``).
        """
        if self.mode == "episodic":
            self.reset()
        self.algorithm.eval()
        with torch.enable_grad():
            return self.adapt_batch(batch)

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.adapt_and_predict(batch)

    def reset(self) -> None:
        """Restore the source weights, the optimiser state and the method state exactly."""
        self.algorithm.load_state_dict(self._source_model)
        if self.optimizer is not None:
            # load_state_dict may keep references to the tensors it is given: hand it a
            # copy, so later steps cannot alter the saved state.
            self.optimizer.load_state_dict(copy.deepcopy(self._source_optimizer))
        self.reset_method_state()
        self.resets += 1

    def step(self, loss: Tensor) -> None:
        """One optimiser step on ``loss``."""
        assert self.optimizer is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def make_optimizer(params: list[nn.Parameter], config: TTAConfig) -> torch.optim.Optimizer:
    """Adam, or SGD with momentum, over ``params`` at ``config.lr`` (no weight decay)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    return torch.optim.Adam(params, lr=config.lr)


ADAPTERS_TTA: Registry[type[TestTimeAdapter]] = Registry("test-time adapter")


def register_tta(name: str):
    """Class decorator registering a test-time adapter under ``name``."""
    return ADAPTERS_TTA.register(name)


def build_tta(algorithm: nn.Module, config: TTAConfig) -> TestTimeAdapter:
    """The adapter ``config.name`` around a private copy of ``algorithm``."""
    return ADAPTERS_TTA.get(config.name)(algorithm, config)


@register_tta("none")
class NoAdaptation(TestTimeAdapter):
    """The identity: predicts with the source weights (the reference every method beats)."""
