"""The training configuration: typed, validated, loaded from YAML, overridable with --set.

The resolved configuration (defaults filled in) is written into every run folder, so a
run can be repeated from its folder alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from radpath.algorithms import ALGORITHMS
from radpath.algorithms.config import AlgorithmConfig
from radpath.batch.dataset import DataConfig
from radpath.errors import ConfigError, RadpathError
from radpath.models.backbone import BACKBONES, BackboneConfig
from radpath.models.crossmodal import ModelConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptimConfig(_Strict):
    """Optimiser and schedule: AdamW, linear warm-up, then cosine decay or a constant rate.

    With ``cycles`` above 1 the cosine restarts (SGDR, Loshchilov and Hutter 2017) and the
    weights at the end of each cycle are kept as ``checkpoints/snapshot-EEE.ckpt``: a
    snapshot ensemble (Huang et al. 2017) for the cost of one training, scored with
    ``--checkpoint snapshots``.
    """

    lr: float = Field(3e-4, gt=0, description="AdamW peak learning rate")
    backbone_lr_scale: float = Field(1.0, gt=0, description="backbone lr = lr * this")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    epochs: int = Field(10, ge=1, description="passes over the training units")
    warmup_epochs: float = Field(0.0, ge=0, description="epochs of linear warm-up from "
                                 "zero to lr")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="after warm-up: cosine decay to zero, or hold the rate")
    cycles: int = Field(
        1, ge=1, description="cosine cycles over the epochs, each ending at zero with its "
        "weights kept as a snapshot checkpoint; epochs must be a multiple of it")
    accumulate_grad_batches: int = Field(1, ge=1, description="batches whose gradients are "
                                         "summed before each optimiser step")
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="exponential moving average of the weights, updated "
        "every optimiser step with this decay; validation, checkpoints and the final model "
        "use the average. 0 switches it off")
    freeze_pretrained_epochs: int = Field(
        0, ge=0, description="epochs at the start during which the backbone's pretrained "
        "tensors (model.backbone.pretrained) stay frozen and only the new layers learn "
        "(radpath.engine.finetune)")
    frozen_layers: int = Field(
        0, ge=0, description="the backbone's first pretrained layers (layer id below this: "
        "the stem or patch embedding 0, each CNN stage or ViT block one more) stay frozen "
        "throughout")
    layer_decay: float = Field(
        1.0, gt=0, le=1, description="layer-wise learning-rate decay of the backbone: layer "
        "l of L at layer_decay ** (L - l) times its rate; 1 switches it off")

    @model_validator(mode="after")
    def _whole_cycles(self) -> OptimConfig:
        # Snapshots are taken at epoch ends, so a cycle must end on one.
        if self.cycles > 1 and self.schedule != "cosine":
            raise ValueError(f"optim.cycles ({self.cycles}) needs optim.schedule 'cosine', "
                             f"got {self.schedule!r}")
        if self.epochs % self.cycles:
            raise ValueError(f"optim.epochs ({self.epochs}) must be a multiple of "
                             f"optim.cycles ({self.cycles}): each cycle ends on an epoch")
        if self.warmup_epochs > self.epochs / self.cycles:
            raise ValueError(f"optim.warmup_epochs ({self.warmup_epochs}) must fit in the "
                             f"first of optim.cycles ({self.epochs // self.cycles} epochs)")
        return self


class PretrainConfig(_Strict):
    """Masked image modelling before (or instead of) supervised training.

    Attributes:
        epochs: passes over the pretraining images; 0 switches pretraining off.
        lr: AdamW peak learning rate (linear warm-up, then cosine decay).
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear warm-up.
        mask_ratio: fraction of each image's patches masked.
        mask_block: masks are drawn in blocks of this many patches a side.
        tiles: H&E tiles drawn per unit and epoch; ``None`` takes every cached tile
            (``data.preprocess.max_tiles``): pretraining wants many images, not bags.
        modalities: the modalities whose images are pretrained on; the others start
            supervised training from the backbone as pretraining leaves it.
    """

    epochs: int = Field(0, ge=0)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    mask_ratio: float = Field(0.5, gt=0, lt=1)
    mask_block: int = Field(2, ge=1)
    tiles: int | None = Field(None, ge=1)
    modalities: tuple[Literal["mammo", "histo"], ...] = Field(("mammo", "histo"), min_length=1)


class TrainerConfig(_Strict):
    """Where and how Lightning runs."""

    accelerator: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto takes a GPU when one is visible")
    devices: int | str = Field(1, description="devices per node: a count, a list such as "
                               "\"0,1\", or auto (--devices)")
    num_nodes: int = Field(1, ge=1, description="machines of a multi-node (DDP) run")
    strategy: str = Field("auto", description="Lightning strategy, e.g. ddp (--strategy)")
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = Field(
        "32-true", description="float32, or mixed precision on GPUs")
    deterministic: bool = Field(True, description="deterministic algorithms: the same "
                                "numbers on every run, at some speed")
    early_stopping_patience: int = Field(5, ge=0, description="0 disables early stopping")
    log_every_n_steps: int = Field(5, ge=1, description="TensorBoard logging interval")
    progress_bar: bool = Field(True, description="show Lightning's progress bar")
    val_every_n_epochs: int = Field(1, ge=1, description="validate every this many epochs")
    limit_train_batches: float | int = Field(
        1.0, description="share (float) or number (int) of training batches an epoch")
    # torch.compile the transformer for training and masked-image pretraining
    # (SharedBackbone.use_compiled): fewer, fused kernels, meant for GPUs, where eager small
    # batches are launch-bound (benchmarks/results/train_throughput_gpu.md); its speed
    # there is not yet measured.
    compile: bool = False
    # float32 matrix products on GPUs: "highest" keeps them in float32; "high" lets them use
    # TF32 tensor cores (Ampere and later: several times faster, about 1e-3 relative error),
    # as Lightning's warning on such GPUs suggests. Set while a run (pre)trains, then restored.
    matmul_precision: Literal["highest", "high", "medium"] = "highest"

    @property
    def lightning_strategy(self) -> str:
        """``strategy`` as Lightning takes it: ``ddp`` finds unused parameters, because a
        batch may lack a modality and leave its adapter (or mask token) unused."""
        return "ddp_find_unused_parameters_true" if self.strategy == "ddp" else self.strategy


class SplitConfig(_Strict):
    """How a manifest without a ``split`` column is split (by patient, stratified)."""

    fractions: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15), description="train, val and test shares of the patients")


class TrainConfig(_Strict):
    """Everything that decides a training run."""

    seed: int = Field(0, description="seeds pairing, splits, sampling, augmentation and "
                      "initialisation: the same seed, config and data give the same numbers "
                      "on a CPU")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    optim: OptimConfig = OptimConfig()
    pretrain: PretrainConfig = PretrainConfig()
    trainer: TrainerConfig = TrainerConfig()
    split: SplitConfig = SplitConfig()

    @model_validator(mode="before")
    @classmethod
    def _patch_size_from_backbone(cls, raw: Any) -> Any:
        """An unset ``data.patch_size`` is the backbone's: the two must agree anyway."""
        if not isinstance(raw, dict) or not isinstance(raw.get("data", {}), dict):
            return raw
        data = raw.get("data", {})
        model = raw.get("model", {})
        backbone = model.get("backbone", {}) if isinstance(model, dict) else None
        name = (backbone.get("name", BackboneConfig.model_fields["name"].default)
                if isinstance(backbone, dict) else None)
        if "patch_size" in data or name not in BACKBONES:
            return raw  # the other checks report what is wrong
        return {**raw, "data": {**data, "patch_size": _backbone_patch(name)}}

    @model_validator(mode="after")
    def _one_token_grid(self) -> TrainConfig:
        # Lesion maps are drawn on the data's grid and compared with the model's token
        # scores: different patch sizes would fail at the first step with a shape error.
        patch = _backbone_patch(self.model.backbone.name)
        if self.data.patch_size != patch:
            raise ValueError(f"data.patch_size ({self.data.patch_size}) must equal the patch "
                             f"size of model.backbone.name '{self.model.backbone.name}' "
                             f"({patch}); leave data.patch_size out to take the backbone's")
        return self

    @model_validator(mode="after")
    def _pretrained_fits(self) -> TrainConfig:
        backbone = self.model.backbone
        for key in ("freeze_pretrained_epochs", "frozen_layers"):
            if getattr(self.optim, key) and not backbone.pretrained:
                raise ValueError(f"optim.{key} needs model.backbone.pretrained (there is "
                                 "nothing pretrained to freeze)")
        if self.pretrain.epochs and (backbone.is_cnn or backbone.stem == "cnn"):
            raise ValueError("pretrain.epochs (masked image modelling) needs a ViT with "
                             "patch-local stem: convolutions let a masked patch be read off "
                             "its neighbours; set pretrain.epochs to 0")
        return self

    @model_validator(mode="after")
    def _clipping_under_fp16(self) -> TrainConfig:
        # Under fp16 the fused AdamW unscales the gradients inside its step, after clipping
        # would have run on the scaled ones; Lightning stops at the first step. Say so now.
        if self.trainer.precision == "16-mixed" and self.optim.grad_clip > 0:
            raise ValueError("optim.grad_clip cannot be used with trainer.precision 16-mixed "
                             "(the fused AdamW unscales fp16 gradients inside its step): use "
                             "bf16-mixed, or set optim.grad_clip=0")
        return self


def check_trainable(config: TrainConfig) -> None:
    """Refuse, before any work, a config whose algorithm cannot train as its name says.

    Not a validation rule: a run folder trained under an older check must stay loadable.

    Raises:
        ConfigError: an unknown ``algorithm.name``, or one that mixes token statistics
            (MixStyle) with no ``model.backbone.mixstyle_layers`` to mix after: MixStyle
            would never run, and the run would be plain ERM under another name.
    """
    name = config.algorithm.name
    try:
        algorithm = ALGORITHMS.get(name)
    except RadpathError as exc:  # the registry's message lists the known names
        raise ConfigError(f"algorithm.name: {exc}") from None
    if algorithm.uses_mixstyle and not config.model.backbone.mixstyle_layers:
        raise ConfigError(f"algorithm.name '{name}' mixes token statistics (MixStyle), but "
                          f"model.backbone.mixstyle_layers is empty: list the shallow blocks "
                          f"to mix after, e.g. [0]")


def with_algorithm(config: TrainConfig, name: str) -> TrainConfig:
    """``config`` with ``algorithm.name`` set to ``name``, checked with
    :func:`check_trainable` (the protocols train several algorithms from one config).

    Raises:
        ConfigError: naming the key and what was expected.
    """
    switched = config.model_copy(update={
        "algorithm": config.algorithm.model_copy(update={"name": name})})
    check_trainable(switched)
    return switched


def _backbone_patch(name: str) -> int:
    return BACKBONES.get(name)()["patch_size"]


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read ``path`` (YAML), apply ``key.sub=value`` overrides and validate.

    Raises:
        ConfigError: naming the key and what was expected.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        raw = loaded
    for override in overrides:
        _apply_override(raw, override)
    return validate_config(raw, source=str(path) if path else "config")


def validate_config(raw: dict[str, Any], *, source: str = "config") -> TrainConfig:
    """Validate a plain mapping into a :class:`TrainConfig`; errors name every bad key."""
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"])
            given = error.get("input")
            shown = "" if isinstance(given, dict) else f" (got {given!r})"
            # A check across sections has no single key: its message names the keys.
            # Our own checks raise ValueError: their text, without pydantic's prefix.
            message = (str(error["ctx"]["error"]) if error["type"] == "value_error"
                       else error["msg"])
            problems.append(f"{key}: {message}{shown}" if key else message)
        raise ConfigError(f"{source}: invalid settings:\n  " + "\n  ".join(problems)) from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {override!r}")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a group of settings")
        node = child
    node[parts[-1]] = yaml.safe_load(text) if text.strip() else ""


def dump_config(config: TrainConfig, path: str | Path) -> Path:
    """Write the resolved configuration as YAML (atomically)."""
    from radpath.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return Path(path)
