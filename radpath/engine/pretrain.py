"""Self-supervised pretraining of the backbone on unlabelled pixels, with Lightning.

Two ways in:

* ``pretrain.epochs > 0`` in a training config: :func:`radpath.engine.run.train` first
  pretrains the backbone on the images of its own training split (never validation or
  test images, so cross-validated figures stay honest), then trains as usual;
* ``radpath pretrain``: pretrain on any manifest, labelled or not, and write
  ``backbone.safetensors`` for ``model.backbone.pretrained`` to point at.

The objective is masked image modelling (:mod:`radpath.models.masked`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torch.utils.data import DataLoader

from radpath.atomic import atomic_path
from radpath.batch.collate import loader_options
from radpath.batch.dataset import PatientBagDataset
from radpath.batch.sampler import EpochShuffle, EpochTagged
from radpath.batch.tensors import valid_rows
from radpath.data.manifest import Manifest, read_manifest
from radpath.data.preprocess import cache_manifest
from radpath.data.workflow import combine
from radpath.engine.config import PretrainConfig, TrainConfig, dump_config
from radpath.engine.devices import matmul_precision
from radpath.engine.module import NonFiniteLossError, with_schedule
from radpath.engine.records import file_sha256, git_commit, package_versions, write_json
from radpath.errors import RadpathError
from radpath.models.crossmodal import CrossModalModel
from radpath.models.masked import MaskedImageModel


@dataclass(frozen=True)
class PretrainResult:
    """What a pretraining run did: epochs, images seen (by all processes), mean
    reconstruction loss of the first and last epochs (of this process), time."""

    epochs: int
    images_seen: dict[str, int]
    first_epoch_loss: float
    last_epoch_loss: float
    wall_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "images_seen": self.images_seen,
                "first_epoch_loss": round(self.first_epoch_loss, 5),
                "last_epoch_loss": round(self.last_epoch_loss, 5),
                "wall_seconds": round(self.wall_seconds, 2)}


class PretrainModule(L.LightningModule):
    """Lightning module of :class:`MaskedImageModel`: loss, schedule, epoch losses."""

    def __init__(self, masked: MaskedImageModel, settings: PretrainConfig) -> None:
        super().__init__()
        self.masked = masked
        self.settings = settings
        self.epoch_losses: list[float] = []
        self.images_seen = {"mammo": 0, "histo": 0}
        self._sum: Tensor | float = 0.0
        self._count = 0

    def on_train_epoch_start(self) -> None:
        self._sum, self._count = 0.0, 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.masked(batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"the pretraining loss became {loss.item()} at epoch "
                                     f"{self.current_epoch}; lower pretrain.lr")
        for modality in self.images_seen:
            # The collate function's rows are on the host: counting them waits for nothing.
            self.images_seen[modality] += len(valid_rows(batch, modality))
        # Summed on the device and read once an epoch, not once a step.
        self._sum = self._sum + loss.detach()
        self._count += 1
        size = int(batch["label"].shape[0])
        self.log_dict({f"pretrain/{k}": v.detach() for k, v in losses.items()},
                      batch_size=size, on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_end(self) -> None:
        self.epoch_losses.append(float(self._sum) / max(1, self._count))

    def on_train_end(self) -> None:
        # Under DDP each process saw its share of the images: count them all.
        names = sorted(self.images_seen)
        counts = torch.tensor([self.images_seen[m] for m in names], device=self.device)
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        self.images_seen = {m: int(c) for m, c in zip(names, counts.tolist(), strict=True)}

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = torch.optim.AdamW(self.masked.trainable_parameters(), lr=self.settings.lr,
                                      weight_decay=self.settings.weight_decay)
        return with_schedule(optimizer, self.trainer, self.settings.warmup_epochs,
                             self.settings.epochs, decay=True)


def pretrain_backbone(model: CrossModalModel, manifest: Manifest, config: TrainConfig,
                      out: str | Path, *, split: str | None = "train") -> PretrainResult:
    """Pretrain ``model.backbone`` in place on the images of ``split`` (None: all records).

    Labels are never read. TensorBoard logs go to ``out/tensorboard/pretrain``.

    Raises:
        RadpathError: when ``config.pretrain.epochs`` is 0 or ``split`` has no images.
    """
    settings = config.pretrain
    _check_epochs(settings)
    started = time.perf_counter()
    loader = _loader(manifest, config, split)
    module = PretrainModule(MaskedImageModel(model, mask_ratio=settings.mask_ratio,
                                             mask_block=settings.mask_block), settings)
    trainer = _trainer(config, Path(out))
    with matmul_precision(config.trainer.matmul_precision):
        trainer.fit(module, loader)
    losses = module.epoch_losses or [math.nan]
    return PretrainResult(settings.epochs, dict(module.images_seen), losses[0], losses[-1],
                          time.perf_counter() - started)


def pretrain(config: TrainConfig, manifests: Sequence[str | Path], out: str | Path, *,
             split: str | None = None, workers: int | None = None) -> Path:
    """Pretrain a fresh backbone on ``manifests`` (labelled or not) into the folder ``out``.

    Writes ``backbone.safetensors`` (for ``model.backbone.pretrained``), ``config.yaml``
    and ``run.json`` (commit, packages, manifest hashes, seed, images seen, losses).

    Args:
        split: pretrain on the records of this split only; None takes every record.

    Returns:
        The path of ``backbone.safetensors``.
    """
    from safetensors.torch import save_file

    _check_epochs(config.pretrain)
    out = Path(out)
    L.seed_everything(config.seed, workers=True, verbose=False)
    manifest = combine([read_manifest(p) for p in manifests])
    cache_manifest(manifest, config.data.cache_dir, config.data.preprocess, workers=workers,
                   progress=config.trainer.progress_bar)
    model = CrossModalModel(config.model)
    model.backbone.use_compiled(config.trainer.compile)
    result = pretrain_backbone(model, manifest, config, out, split=split)
    weights = out / "backbone.safetensors"
    if rank_zero_only.rank != 0:
        return weights  # under DDP, one process writes
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, tmp)
    dump_config(config, out / "config.yaml")
    write_json({"radpath_pretrain": 1, "git_commit": git_commit(),
                "packages": package_versions(),
                "manifests": {str(p): file_sha256(p) for p in manifests},
                "split": split, "seed": config.seed, "weights": str(weights),
                **result.as_dict()}, out / "run.json")
    return weights


def _check_epochs(settings: PretrainConfig) -> None:
    if settings.epochs < 1:
        raise RadpathError("pretrain.epochs is 0, which switches pretraining off; "
                           "set it, e.g. --set pretrain.epochs=50")


def _loader(manifest: Manifest, config: TrainConfig, split: str | None) -> DataLoader:
    data, settings = config.data, config.pretrain
    tiles = settings.tiles or data.preprocess.max_tiles
    chosen = Manifest([r for r in manifest if r.modality in settings.modalities],
                      source=manifest.source)
    dataset = PatientBagDataset(chosen, data.model_copy(update={"max_tiles": tiles}),
                                split=split, train=True, seed=config.seed)
    if not len(dataset):
        where = f"the '{split}' split" if split else "the manifest"
        raise RadpathError(f"nothing to pretrain on: {where} has no images of "
                           f"pretrain.modalities ({', '.join(settings.modalities)})")
    return DataLoader(dataset, batch_size=data.batch_size,
                      sampler=EpochTagged(EpochShuffle(len(dataset), seed=config.seed)),
                      **loader_options(data, config.seed))


def _trainer(config: TrainConfig, out: Path) -> L.Trainer:
    settings = config.trainer
    return L.Trainer(
        accelerator=settings.accelerator, devices=settings.devices, num_nodes=settings.num_nodes,
        strategy=settings.lightning_strategy, precision=settings.precision,
        deterministic=settings.deterministic,
        max_epochs=config.pretrain.epochs, gradient_clip_val=config.optim.grad_clip or None,
        logger=TensorBoardLogger(out, name="tensorboard", version="pretrain"),
        log_every_n_steps=settings.log_every_n_steps, enable_progress_bar=settings.progress_bar,
        enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0)
