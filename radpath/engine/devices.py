"""Where a trained model predicts: a device name resolved, and batches moved to it.

Training runs where Lightning puts it (``trainer.accelerator``); prediction outside the
Trainer (``radpath evaluate``, cross-validation and LODO folds) runs on the device named
here. Prediction is in float32 on every device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from radpath.engine.config import TrainerConfig
from radpath.engine.device_names import DEVICE_HELP
from radpath.errors import RadpathError


def resolve_device(name: str | torch.device) -> torch.device:
    """The ``torch.device`` for ``name``: one of :data:`DEVICE_HELP`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RadpathError(f"device '{name}' is not one of: {DEVICE_HELP}") from None
    if device.type not in ("cpu", "cuda"):
        raise RadpathError(f"device '{name}' is not one of: {DEVICE_HELP}")
    if device.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= visible:
            raise RadpathError(f"device '{name}' asked for, but this machine has "
                               f"{visible} visible CUDA device(s); use --device cpu")
    return device


def prediction_device(trainer: TrainerConfig) -> torch.device:
    """The device a run's folds predict on: the CPU when it trained on the CPU, else what
    ``auto`` finds (a protocol trains and predicts on the same machine)."""
    return resolve_device("cpu" if trainer.accelerator == "cpu" else "auto")


def batch_to(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """``batch`` with its tensors on ``device`` (other values, e.g. ids, as they are)."""
    return {key: value.to(device) if torch.is_tensor(value) else value
            for key, value in batch.items()}


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """torch's float32 matmul precision (``trainer.matmul_precision``) inside, the previous
    one restored after: it is process-wide, and a library call should not leave it changed."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
