"""The test-time adaptation method contract: ``adapt_and_predict(batch)`` on a private copy.

A :class:`TTAMethod` wraps a trained :class:`~radpath.algorithms.base.Algorithm`
and returns the same prediction dictionary as ``Algorithm.predict``, after adapting to
each unlabelled test batch. Three promises hold for every adapter:

* it works on a **deep copy** of the algorithm: the caller's object, and any checkpoint
  on disk, are never touched;
* ``mode="episodic"`` restores the source weights before every batch, so a batch's
  prediction does not depend on what came before; ``mode="online"`` keeps adapting;
* :meth:`TTAMethod.reset` restores the saved source state exactly: every parameter
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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from radpath.registry import Registry, nest_settings

Batch = Mapping[str, Any]
Modality = Literal["mammo", "histo"]

# Keys of configs written before each method's settings moved beside it.
RENAMED = {**{key: f"sar.{key}" for key in ("e0", "reset_threshold", "ema_momentum", "sam",
                                              "sam_rho")},
           **{key: f"causal.{key}" for key in ("n_interventions", "n_directions",
                                                 "nuisance_ratio", "adapt_norm",
                                                 "interventions")}}


class TTAConfig(BaseModel):
    """Which test-time adaptation method runs, and its hyperparameters.

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
        sar, causal, ...: each registered method's own settings, declared in its file
            (``SarSettings`` in ``adapt/sar.py``...), nested under its name; every one is
            present, with its defaults where the config gives none.
        seed: seed of the intervention generator (restored by ``reset``).
    """

    # Extra keys are the methods' settings, each checked by _nest against its class.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "tent"
    mode: Literal["episodic", "online"] = "episodic"
    steps: int = Field(1, ge=0)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)
    modalities: tuple[Modality, ...] = ("mammo", "histo")
    norm_scope: Literal["backbone", "model"] = "backbone"
    seed: int = 0

    @field_validator("modalities")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"modalities must not repeat, got {value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        from radpath.adapt import TTA_METHODS  # the built-ins register on import

        return nest_settings(data, TTA_METHODS, "tta", cls.model_fields, RENAMED)


class TTAMethod(nn.Module):
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
    name: ClassVar[str]
    settings: ClassVar[type[BaseModel] | None] = None

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


TTA_METHODS: Registry[type[TTAMethod]] = Registry("test-time adaptation method")


def register_tta(cls: type[TTAMethod]) -> type[TTAMethod]:
    """Class decorator registering a test-time adaptation method under its ``name``.

    A method with hyperparameters of its own declares them as a pydantic model in
    ``settings``; :class:`TTAConfig` then nests them under its name (``sar.e0``).
    """
    return TTA_METHODS.register(cls)


def build_tta(algorithm: nn.Module, config: TTAConfig) -> TTAMethod:
    """The method ``config.name`` around a private copy of ``algorithm``."""
    return TTA_METHODS.get(config.name)(algorithm, config)


@register_tta
class NoAdaptation(TTAMethod):
    """The identity: predicts with the source weights (the reference every method beats)."""

    name = "none"
