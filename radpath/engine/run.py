"""``train``: manifests and a config in, a run folder out.

The run folder holds ``config.yaml`` (the resolved config), ``run.json`` (commit, package
versions, manifest hashes, pairing mode, seed, device, timings, final validation metrics),
``checkpoints/best.ckpt`` and ``checkpoints/last.ckpt`` (written atomically by Lightning),
and TensorBoard logs under ``tensorboard/`` (``tensorboard/pretrain`` for the
self-supervised pretraining that ``pretrain.epochs`` switches on). With ``optim.ema_decay``
a checkpoint's ``state_dict`` holds the averaged weights, the ones validation saw and
prediction loads; ``current_model_state`` holds the weights training resumes from. With
``optim.cycles`` above 1, ``checkpoints/snapshot-EEE.ckpt`` holds the weights at the end of
each cosine cycle (EEE: its last epoch, counted from 0).
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    WeightAveraging,
)
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torch.utils.data import DataLoader

from radpath.algorithms import ALGORITHMS, Algorithm
from radpath.batch.collate import loader_options
from radpath.batch.dataset import PatientBagDataset
from radpath.batch.sampler import BalancedUnitSampler, EpochTagged
from radpath.data.manifest import Manifest
from radpath.data.pairing import pairing_mode
from radpath.data.preprocess import cache_manifest
from radpath.data.splits import check_leakage, split_patients
from radpath.data.workflow import read_paired
from radpath.engine.config import TrainConfig, check_trainable, dump_config
from radpath.engine.datawait import DataWait
from radpath.engine.devices import matmul_precision
from radpath.engine.module import NonFiniteLossError, RadpathModule
from radpath.engine.pretrain import pretrain_backbone
from radpath.engine.records import file_sha256, git_commit, package_versions, write_json
from radpath.errors import RadpathError
from radpath.models.crossmodal import CrossModalModel, ModelConfig
from radpath.parallel import exit_with_parent

# File names of the snapshot checkpoints, one at the end of each cosine cycle.
SNAPSHOT_PREFIX = "snapshot-"


@dataclass(frozen=True)
class RunResult:
    """Where a finished run put its outputs, and its final validation metrics."""

    out_dir: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    val_metrics: dict[str, Any]
    wall_seconds: float


def prepare_manifest(paths: Sequence[str | Path], config: TrainConfig) -> Manifest:
    """Combine manifests; pair and split them if not done yet; refuse leaks and no labels."""
    manifest = read_paired(paths, seed=config.seed)
    if not any(r.label for r in manifest):
        raise RadpathError("the manifests have no labels: training needs a 'label' column "
                           "with normal, benign or malignant values")
    if not all(r.split for r in manifest):
        manifest = split_patients(manifest, fractions=config.split.fractions, seed=config.seed)
    check_leakage(manifest)
    for split in ("train", "val"):
        if not any(r.split == split for r in manifest):
            raise RadpathError(f"no patient falls in the '{split}' split; give more patients "
                               f"or change split.fractions")
    return manifest


def build_algorithm(config: TrainConfig, domains: Sequence[str], num_grades: int) -> Algorithm:
    """The model and algorithm a config describes (grading head sized from the data)."""
    model = CrossModalModel(sized_for_grades(config.model, num_grades))
    algorithm_class = ALGORITHMS.get(config.algorithm.name)
    return algorithm_class(model, config.algorithm, domains=domains, seed=config.seed)


def sized_for_grades(model: ModelConfig, num_grades: int) -> ModelConfig:
    """``model`` with its grading head sized to ``num_grades`` ordered grades, unless the
    config fixes the size itself or the data has fewer than two grades."""
    if model.num_grades or num_grades < 2:
        return model
    return model.model_copy(update={"num_grades": num_grades})


def make_loaders(manifest: Manifest, config: TrainConfig) -> tuple[DataLoader, DataLoader]:
    data = config.data
    train_set = PatientBagDataset(manifest, data, split="train", train=True, seed=config.seed)
    val_set = PatientBagDataset(manifest, data, split="val", train=False, seed=config.seed,
                                domains=train_set.domains)
    sampler = EpochTagged(BalancedUnitSampler(train_set.labels, train_set.modality_domains,
                                              seed=config.seed))
    # Loader workers leave with the run, even when it is SIGKILLed.
    guard = {"worker_init_fn": functools.partial(_exit_with_parent, os.getpid())}
    # Page-locked batches copy to a GPU asynchronously, overlapping the step before.
    pin = config.trainer.accelerator != "cpu" and torch.cuda.is_available()
    return (DataLoader(train_set, batch_size=data.batch_size, sampler=sampler, drop_last=False,
                       **loader_options(data, config.seed, pin_memory=pin), **guard),
            DataLoader(val_set, batch_size=data.batch_size, shuffle=False,
                       **loader_options(data, config.seed, pin_memory=pin), **guard))


def _exit_with_parent(parent: int, _worker_id: int) -> None:
    exit_with_parent(parent)


def train(config: TrainConfig, manifests: Sequence[str | Path], out: str | Path, *,
          resume: bool = False, callbacks: Sequence[Callback] = (),
          workers: int | None = None) -> RunResult:
    """Train ``config`` on ``manifests`` into the run folder ``out``.

    Whatever ends a run early is written into ``run.json``: ``status`` "interrupted"
    (Ctrl-C, a non-finite loss: resumable) or "failed", with the ``reason`` and the
    ``stage`` it was in, so that no folder is left saying "running".
    """
    check_trainable(config)
    log = RunLog(Path(out))
    if resume:
        check_resumable(log.out / LAST_CHECKPOINT)
    try:
        return _train(config, manifests, log, resume, callbacks, workers)
    except (KeyboardInterrupt, SystemExit, NonFiniteLossError) as exc:
        # Lightning turns Ctrl-C into SystemExit after a graceful shutdown.
        log.end("interrupted", exc, resume_from=LAST_CHECKPOINT)
        raise
    except Exception as exc:
        log.end("failed", exc)
        raise


# Paths inside a run folder, relative to it: a copied or moved folder stays whole.
LAST_CHECKPOINT = "checkpoints/last.ckpt"


def _train(config: TrainConfig, manifests: Sequence[str | Path], log: RunLog, resume: bool,
           callbacks: Sequence[Callback], workers: int | None) -> RunResult:
    started = time.perf_counter()
    out = log.out
    last = out / LAST_CHECKPOINT
    L.seed_everything(config.seed, workers=True, verbose=False)
    log.stage = "preparing the manifests"
    manifest = prepare_manifest(manifests, config)
    log.stage = "caching the preprocessed images"
    report = cache_manifest(manifest, config.data.cache_dir, config.data.preprocess,
                            workers=workers, progress=config.trainer.progress_bar)
    refuse_failed_cache(report.failed)
    log.stage = "building the model"
    train_loader, val_loader = make_loaders(manifest, config)
    train_set = train_loader.dataset
    algorithm = build_algorithm(config, train_set.domains, train_set.num_grades)
    algorithm.model.backbone.use_compiled(config.trainer.compile)
    module = RadpathModule(algorithm, config.optim, seed=config.seed)
    record = log.record = _initial_record(config, manifest, manifests, train_set, algorithm)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(config, out / "config.yaml")
    write_json({**record, "status": "running"}, out / "run.json")
    # A resumed run's checkpoint already holds the pretrained (and further trained) weights.
    if config.pretrain.epochs and not resume:
        log.stage = "pretraining"
        pretrained = pretrain_backbone(algorithm.model, manifest, config, out)
        record["pretrain"] = pretrained.as_dict()
    data_wait = DataWait()
    trainer = _trainer(config, out, [data_wait, *callbacks])
    log.rank_zero = trainer.is_global_zero
    log.stage = "training"
    with matmul_precision(config.trainer.matmul_precision):
        trainer.fit(module, train_loader, val_loader, ckpt_path=last if resume else None,
                    weights_only=True)
    best = _best_path(trainer)
    metrics = {k: v.as_dict() for k, v in module.val_metrics.items()}
    wall = time.perf_counter() - started
    record.update(status="finished", finished=_now(), wall_seconds=round(wall, 2),
                  epochs_run=trainer.current_epoch, global_steps=trainer.global_step,
                  best_checkpoint=relative_to_run(best, out) if best else None,
                  final_val_metrics=metrics, data_wait=data_wait.summary())
    if trainer.is_global_zero:
        write_json(record, out / "run.json")
    return RunResult(out, best, last, metrics, wall)


class RunLog:
    """What ``run.json`` says while a run is under way, and how it ends."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.record: dict[str, Any] | None = None
        self.stage = "starting"
        self.rank_zero = True

    def end(self, status: str, exc: BaseException, **extra: str) -> None:
        """Write ``status`` and why into ``run.json`` (kept fields of an earlier record)."""
        if not self.rank_zero:
            return
        record = self.record or _earlier_record(self.out / "run.json")
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        record = {**record, "status": status, "stage": self.stage, "reason": reason[:2000],
                  "ended": _now(), **extra}
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(record, self.out / "run.json")


def _earlier_record(path: Path) -> dict[str, Any]:
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = None
    return earlier if isinstance(earlier, dict) else {"radpath_run": 1, "started": _now()}


def relative_to_run(path: Path, out: Path) -> str:
    """``path`` relative to the run folder ``out`` (POSIX form) when inside it."""
    try:
        return Path(path).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return str(path)


def refuse_failed_cache(failed: Sequence[tuple[str, str]]) -> None:
    """Stop before training when images could not be preprocessed: each would end the run
    mid-fit; ingest skips such files (``radpath ingest``)."""
    if not failed:
        return
    shown = "; ".join(f"{path}: {reason}" for path, reason in failed[:3])
    raise RadpathError(f"{len(failed)} image(s) of the manifest cannot be preprocessed "
                       f"(e.g. {shown}); ingest the data again (radpath ingest skips and "
                       "reports such files) or remove them from the manifest")


def check_resumable(last: Path) -> None:
    """Refuse, with the reason, a ``last.ckpt`` that cannot be resumed from."""
    if not last.is_file():
        raise RadpathError(f"cannot resume: {last} does not exist")
    try:
        torch.load(last, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RadpathError(f"cannot resume from {last}: it is not a safe checkpoint (it holds "
                           "objects other than tensors and plain values, which could run "
                           f"code when loaded; refused) [{str(exc).splitlines()[0][:200]}]"
                           ) from None
    except Exception as exc:  # truncated zip, wrong file, I/O error
        raise RadpathError(f"cannot resume from {last}: it cannot be read as a checkpoint "
                           f"({type(exc).__name__}: {str(exc)[:200]}); it may be truncated. "
                           "Resume from a copy, or train afresh without --resume") from None


def _trainer(config: TrainConfig, out: Path, extra: Sequence[Callback]) -> L.Trainer:
    settings = config.trainer
    folder = out / "checkpoints"
    best = ModelCheckpoint(dirpath=folder, filename="best", monitor="val_auc", mode="max",
                           save_top_k=1, enable_version_counter=False)
    # A second, unmonitored checkpoint keeps the latest epoch: Lightning's own save_last
    # only writes when the monitored checkpoint improved.
    latest = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1,
                             every_n_epochs=1, enable_version_counter=False)
    callbacks: list[Callback] = [best, latest, *extra]
    if config.optim.cycles > 1:
        # The weights at the end of each cosine cycle: the members of a snapshot ensemble.
        callbacks.append(SnapshotCheckpoint(
            dirpath=folder, filename=SNAPSHOT_PREFIX + "{epoch:03d}", monitor=None,
            save_top_k=-1, every_n_epochs=config.optim.epochs // config.optim.cycles,
            auto_insert_metric_name=False, enable_version_counter=False))
    if config.optim.ema_decay:
        callbacks.append(WeightAveraging(avg_fn=ema_of_floats(config.optim.ema_decay)))
    if settings.early_stopping_patience > 0:
        callbacks.append(EarlyStopping(monitor="val_auc", mode="max",
                                       patience=settings.early_stopping_patience))
    if settings.progress_bar:
        from lightning.pytorch.callbacks import RichProgressBar

        callbacks.append(RichProgressBar(leave=True))
    return L.Trainer(
        accelerator=settings.accelerator, devices=settings.devices, num_nodes=settings.num_nodes,
        strategy=settings.lightning_strategy, precision=settings.precision,
        deterministic=settings.deterministic,
        max_epochs=config.optim.epochs,
        accumulate_grad_batches=config.optim.accumulate_grad_batches,
        gradient_clip_val=config.optim.grad_clip or None, callbacks=callbacks,
        logger=TensorBoardLogger(out, name="tensorboard", version=""),
        log_every_n_steps=settings.log_every_n_steps, enable_progress_bar=settings.progress_bar,
        check_val_every_n_epoch=settings.val_every_n_epochs,
        limit_train_batches=settings.limit_train_batches, enable_model_summary=False,
        num_sanity_val_steps=0,
    )


class SnapshotCheckpoint(ModelCheckpoint):
    """A checkpoint callback of its own name in the checkpoint's callback states, so that it
    can share its period with the ``last`` one (one-epoch cycles) without clashing."""

    @property
    def state_key(self) -> str:
        return f"snapshots{super().state_key}"


def ema_of_floats(decay: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """The averaging step of :class:`~torch.optim.swa_utils.AveragedModel`: an exponential
    moving average of floating-point tensors, while integer buffers (the algorithm's step
    counter) follow the model, which an average would truncate."""

    def average(averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        if not averaged.is_floating_point():
            return current
        return averaged.lerp(current, 1.0 - decay)

    return average


def _best_path(trainer: L.Trainer) -> Path | None:
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.best_model_path:
            return Path(callback.best_model_path)
    return None


def _initial_record(config: TrainConfig, manifest: Manifest, paths: Sequence[str | Path],
                    train_set: PatientBagDataset, algorithm: Algorithm) -> dict[str, Any]:
    return {
        "radpath_run": 1,
        "started": _now(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "manifests": {str(p): file_sha256(p) for p in paths},
        "pairing_mode": pairing_mode(manifest),
        "seed": config.seed,
        "algorithm": config.algorithm.name,
        "device": _device(config),
        "domains": list(train_set.domains),
        "num_grades": int(getattr(algorithm.model.config, "num_grades", 0)),
        "splits": {s: sum(r.split == s for r in manifest) for s in ("train", "val", "test")},
        "units": {"train": len(train_set)},
        "parameters": sum(p.numel() for p in algorithm.parameters()),
        "pretrain": None,
        "pretrained_weights": _pretrained_weights(algorithm),
    }


def _pretrained_weights(algorithm: Algorithm) -> dict[str, Any] | None:
    report = algorithm.model.backbone.pretrained_report
    return None if report is None else report.as_dict()


def _device(config: TrainConfig) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    return {"accelerator": config.trainer.accelerator, "devices": config.trainer.devices,
            "strategy": config.trainer.strategy, "precision": config.trainer.precision,
            "cuda": torch.cuda.get_device_name(0) if cuda else None,
            "torch_threads": torch.get_num_threads()}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
