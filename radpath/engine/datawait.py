"""How much of training's wall time is spent waiting for data.

A step that waits for its batch is a step the data loader starves. :class:`DataWait` times,
on the host, the gap before each training batch reaches the module (from the end of the
previous step, or from the start of the epoch for its first batch: fetching the batch,
Lightning's own bookkeeping and, for the first batch, the workers' first prefetch) and the
step itself (forward, backward, optimiser step), and reports the share of the first. On a
GPU the step's time is the host's: work still queued on the device is counted in the step
that waits for it.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class DataWait(Callback):
    """Accumulates the seconds spent waiting for batches and in training steps."""

    def __init__(self) -> None:
        self.wait_seconds = 0.0
        self.step_seconds = 0.0
        self.steps = 0
        self._mark: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = time.perf_counter()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.wait_seconds += now - self._mark
        self._mark = now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._mark is not None:
            self.step_seconds += now - self._mark
            self.steps += 1
        self._mark = now

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._mark = None  # validation and checkpoints between epochs are not data waits

    def summary(self) -> dict[str, float | int]:
        """Seconds waiting and stepping, the steps, and the waiting share of both."""
        total = self.wait_seconds + self.step_seconds
        return {"wait_seconds": round(self.wait_seconds, 3),
                "step_seconds": round(self.step_seconds, 3), "steps": self.steps,
                "wait_share": round(self.wait_seconds / total, 4) if total else 0.0}
