from __future__ import annotations

import pytest

from radpath.engine import datawait
from radpath.engine.datawait import DataWait


def test_waiting_share_counts_the_gaps_before_batches_not_between_epochs(monkeypatch) -> None:
    clock = iter([0.0, 1.0, 4.0, 4.5, 7.5, 20.0, 21.0, 23.0])
    monkeypatch.setattr(datawait.time, "perf_counter", lambda: next(clock))
    wait = DataWait()
    wait.on_train_epoch_start(None, None)          # 0.0
    wait.on_train_batch_start(None, None, {}, 0)   # 1.0: waited 1
    wait.on_train_batch_end(None, None, None, {}, 0)  # 4.0: stepped 3
    wait.on_train_batch_start(None, None, {}, 1)   # 4.5: waited 0.5
    wait.on_train_batch_end(None, None, None, {}, 1)  # 7.5: stepped 3
    wait.on_train_epoch_end(None, None)            # validation follows: not a wait
    wait.on_train_epoch_start(None, None)          # 20.0
    wait.on_train_batch_start(None, None, {}, 0)   # 21.0: waited 1
    wait.on_train_batch_end(None, None, None, {}, 0)  # 23.0: stepped 2
    summary = wait.summary()
    assert summary["steps"] == 3
    assert summary["wait_seconds"] == pytest.approx(2.5)
    assert summary["step_seconds"] == pytest.approx(8.0)
    assert summary["wait_share"] == pytest.approx(2.5 / 10.5, abs=1e-4)


def test_no_steps_no_share() -> None:
    assert DataWait().summary() == {"wait_seconds": 0.0, "step_seconds": 0.0, "steps": 0,
                                    "wait_share": 0.0}
