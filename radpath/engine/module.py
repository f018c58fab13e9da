"""The Lightning module: an algorithm, its optimiser and schedule, validation AUCs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from radpath.algorithms.base import Algorithm
from radpath.engine.config import OptimConfig
from radpath.engine.finetune import (
    early_layers,
    layer_scales,
    pretrained_parameters,
    scale_by_layer,
    set_frozen,
)
from radpath.errors import RadpathError
from radpath.stats.metrics import auc_with_ci

PREDICTED = ("mammo", "histo", "fused")


class NonFiniteLossError(RadpathError):
    """The training loss became NaN or infinite."""


class RadpathModule(L.LightningModule):
    """Trains any registered :class:`Algorithm` and validates it by AUC."""

    def __init__(self, algorithm: Algorithm, optim: OptimConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.algorithm = algorithm
        self.optim = optim
        self.seed = seed
        self._val_outputs: list[dict[str, Tensor]] = []
        self.val_metrics: dict[str, Any] = {}

    def on_train_epoch_start(self) -> None:
        # Epoch-seeded randomness makes a run resumed at an epoch boundary retrace the
        # uninterrupted one: MixStyle and tile mixing restart from here, as the sampler's
        # draws, tiles and augmentation do from the epoch Lightning gives the sampler
        # (EpochTagged).
        epoch_seed = self.seed * 100_003 + self.current_epoch
        if self.algorithm.mixstyle is not None:
            self.algorithm.mixstyle.reseed(epoch_seed)
        if self.algorithm.tile_mix is not None:
            self.algorithm.tile_mix.reseed(epoch_seed)
        backbone = self.algorithm.model.backbone
        if self.optim.freeze_pretrained_epochs:
            set_frozen(pretrained_parameters(backbone),
                       self.current_epoch < self.optim.freeze_pretrained_epochs)
        if self.optim.frozen_layers:
            set_frozen(early_layers(backbone, self.optim.frozen_layers), True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        schedule = getattr(self.algorithm, "irm_schedule", None)
        if schedule is not None and schedule.just_annealed(self.algorithm.steps_taken()):
            # DomainBed resets Adam when the IRM weight jumps: its moments were estimated
            # under gradients of a very different scale.
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, logs = self.algorithm.compute_loss(batch)
        if not torch.isfinite(loss):
            terms = {name: float(value) for name, value in logs.items()}
            raise NonFiniteLossError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, step "
                f"{self.global_step} (terms: {terms}); training stopped and the last good "
                f"checkpoint was kept. Lower optim.lr or check the data.")
        size = int(batch["label"].shape[0])
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=size,
                      on_step=True, on_epoch=False, sync_dist=False)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After backward and the optimiser step: clamping parameters in place any earlier
        # would modify a tensor the backward pass still needs.
        self.algorithm.after_step()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        predictions = self.algorithm.predict(batch)
        kept = {f"{m}_prob": predictions[f"{m}_prob"].float() for m in PREDICTED}
        kept.update({key: batch[key] for key in ("label", "has_mammo", "has_histo")})
        self._val_outputs.append({k: v.detach() for k, v in kept.items()})

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        merged = {k: torch.cat([o[k] for o in self._val_outputs]) for k in self._val_outputs[0]}
        self._val_outputs.clear()
        if self.trainer.world_size > 1:
            merged = {k: v.reshape(-1) for k, v in self.all_gather(merged).items()}
        self.val_metrics = validation_aucs(merged)
        self.log("val_auc", monitored_auc(self.val_metrics), prog_bar=True, sync_dist=False)
        for name, estimate in self.val_metrics.items():
            if not math.isnan(estimate.value):
                self.log(f"val/auc_{name}", estimate.value, sync_dist=False)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        if gradient_clip_val and self.trainer.precision == "bf16-mixed":
            # bf16 needs no loss scaler, so these are the true gradients and clipping them is
            # sound; Lightning 2.6 refuses it anyway for an optimiser that unscales in its step,
            # such as the fused AdamW (Lightning issue #21435).
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.algorithm.make_optimizer(self.optim.lr, self.optim.weight_decay)
        backbone = {id(p) for p in self.algorithm.model.backbone.parameters()}
        if self.optim.backbone_lr_scale != 1.0:
            optimizer = split_backbone_lr(optimizer, backbone, self.optim.backbone_lr_scale)
        if self.optim.layer_decay < 1.0:
            optimizer = scale_by_layer(optimizer, layer_scales(self.algorithm.model.backbone,
                                                               self.optim.layer_decay))
        return with_schedule(optimizer, self.trainer, self.optim.warmup_epochs, self.optim.epochs,
                             decay=self.optim.schedule == "cosine", cycles=self.optim.cycles)


def monitored_auc(metrics: dict[str, Any]) -> float:
    """The figure checkpoints and early stopping follow: the mean per-modality AUC.

    Not the fused AUC: with label-matched pseudo-pairs, whether a unit has a partner at all
    depends on its label, so the fused AUC can be high before the model learns anything
    (measured: "has an H&E partner" alone gave 0.668 on the real validation split), and a
    checkpoint chosen by it can be the untrained one. Fused is the fall-back when neither
    modality has an AUC; 0.0 when nothing has one (a single class in validation), which
    keeps checkpointing and early stopping defined.
    """
    per_modality = [metrics[m].value for m in ("mammo", "histo")
                    if m in metrics and not math.isnan(metrics[m].value)]
    if per_modality:
        return float(np.mean(per_modality))
    fused = metrics.get("fused")
    return 0.0 if fused is None or math.isnan(fused.value) else float(fused.value)


def validation_aucs(merged: dict[str, Tensor]) -> dict[str, Any]:
    """Unit-level malignancy AUC with 95% CI per modality and fused."""
    label = merged["label"].cpu().numpy()
    known = label >= 0
    results = {}
    for modality in PREDICTED:
        rows = known.copy()
        if modality != "fused":
            rows &= merged[f"has_{modality}"].cpu().numpy().astype(bool)
        scores = merged[f"{modality}_prob"].cpu().numpy()[rows]
        results[modality] = auc_with_ci((label[rows] == 2).astype(int), scores, n_boot=500)
    return results


def with_schedule(optimizer: torch.optim.Optimizer, trainer: L.Trainer, warmup_epochs: float,
                  epochs: int, *, decay: bool, cycles: int = 1) -> dict[str, Any]:
    """Lightning's optimiser dictionary: ``optimizer`` stepped per batch by :func:`lr_factor`,
    warming up over the steps of ``warmup_epochs`` of the run's ``epochs``."""
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup = int(total * warmup_epochs / epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(warmup, total, decay=decay, cycles=cycles))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def lr_factor(warmup: int, total: int, *, decay: bool,
              cycles: int = 1) -> Callable[[int], float]:
    """The learning-rate multiplier at each step: linear warm-up, then cosine or constant.

    With ``cycles`` the ``total`` steps are cut into equal cycles, the cosine restarting at
    the full rate at the start of each; the warm-up belongs to the first.
    """
    length = total / cycles

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not decay:
            return 1.0
        cycle = min(int(step // length), cycles - 1)
        start = warmup if cycle == 0 else cycle * length
        progress = (step - start) / max(1, (cycle + 1) * length - start)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def split_backbone_lr(optimizer: torch.optim.Optimizer, backbone: set[int],
                      scale: float) -> torch.optim.Optimizer:
    """Split each parameter group of a fresh ``optimizer`` (no step taken yet) into its
    backbone parameters (ids in ``backbone``), at ``scale`` times the group's rate, and the
    others, in place."""
    groups = []
    for group in optimizer.param_groups:
        for in_backbone in (True, False):
            params = [p for p in group["params"] if (id(p) in backbone) == in_backbone]
            if params:
                lr = group["lr"] * (scale if in_backbone else 1.0)
                groups.append({**group, "params": params, "lr": lr})
    # In place rather than a new optimizer built from ``defaults``: the defaults hold
    # settings that the constructor does not take back in every torch version.
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)
    return optimizer
