"""Faults around a run folder: failed runs say so, copies load their own weights, and
unreadable or unsafe checkpoints are refused with a reason (issue 44, points 3, 4 and 7)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image

from radpath.data.manifest import read_manifest, write_manifest
from radpath.engine.checkpoint import load_run
from radpath.engine.run import train
from radpath.errors import RadpathError
from radpath.models.pretrained import read_source


def _record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def _copy(run: Path, where: Path) -> Path:
    shutil.copytree(run, where)
    return where


# ---------------------------------------------------------------- 3. a failed run says so


def test_unpreprocessable_image_stops_the_run_before_fitting_and_is_recorded(
        tiny_manifest, tiny_config, tmp_path):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.linspace(0, 255, 500).astype(np.uint8)[:, None]).save(strip)
    records = list(read_manifest(tiny_manifest))
    at = next(i for i, r in enumerate(records) if r.modality == "mammo" and r.split == "train")
    records[at] = records[at].with_(path=str(strip))
    manifest = write_manifest(records, tmp_path / "poisoned.csv")
    with pytest.raises(RadpathError, match="cannot be preprocessed"):
        train(tiny_config(), [manifest], tmp_path / "run", workers=1)
    record = _record(tmp_path / "run")
    assert record["status"] == "failed"
    assert record["stage"] == "caching the preprocessed images"
    assert "too small" in record["reason"] and "strip.png" in record["reason"]


class _Crash(Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            raise RuntimeError("disk on fire")


def test_a_crash_mid_fit_leaves_failed_not_running(tiny_manifest, tiny_config, tmp_path):
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(tiny_config("optim.epochs=2"), [tiny_manifest], tmp_path / "run",
              callbacks=[_Crash()], workers=1)
    record = _record(tmp_path / "run")
    assert (record["status"], record["stage"]) == ("failed", "training")
    assert record["reason"] == "RuntimeError: disk on fire"
    assert record["seed"] == 0 and record["manifests"]  # the rest of the record is kept


# ---------------------------------------------------------------- 4. copied run folders


def test_run_json_paths_are_relative_to_the_run_folder(tiny_run):
    record = _record(tiny_run)
    assert record["best_checkpoint"] == "checkpoints/best.ckpt"


def test_a_copied_run_loads_its_own_weights_not_the_originals(tiny_run, tmp_path):
    first = _copy(tiny_run, tmp_path / "first")
    second = _copy(first, tmp_path / "second")
    (first / "checkpoints" / "best.ckpt").write_bytes(b"not a checkpoint any more")
    loaded = load_run(second)
    assert loaded.checkpoint == second / "checkpoints" / "best.ckpt"


def test_an_old_absolute_checkpoint_path_is_read_inside_the_folder(tiny_run, tmp_path):
    copy = _copy(tiny_run, tmp_path / "copy")
    elsewhere = _copy(tiny_run, tmp_path / "elsewhere")
    record = _record(copy)
    record["best_checkpoint"] = str(elsewhere.resolve() / "checkpoints" / "best.ckpt")
    (copy / "run.json").write_text(json.dumps(record))
    assert load_run(copy).checkpoint == copy / "checkpoints" / "best.ckpt"


# ---------------------------------------------------------------- 7. unreadable checkpoints


class Payload:
    """Any class: pickling it makes a checkpoint that weights_only refuses."""


def test_resume_from_a_truncated_checkpoint_says_why(tiny_run, tiny_manifest, tiny_config,
                                                     tmp_path):
    copy = _copy(tiny_run, tmp_path / "copy")
    last = copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(RadpathError, match=r"cannot be read as a checkpoint.*truncated"):
        train(tiny_config(), [tiny_manifest], copy, resume=True, workers=1)


def test_resume_from_an_unsafe_checkpoint_is_refused(tiny_run, tiny_manifest, tiny_config,
                                                     tmp_path):
    copy = _copy(tiny_run, tmp_path / "copy")
    torch.save({"state_dict": {}, "payload": Payload()}, copy / "checkpoints" / "last.ckpt")
    with pytest.raises(RadpathError, match="not a safe checkpoint"):
        train(tiny_config(), [tiny_manifest], copy, resume=True, workers=1)


@pytest.mark.parametrize("kind", ["unsafe.pth", "truncated.pth", "broken.safetensors"])
def test_pretrained_weights_that_cannot_be_loaded_are_a_clear_error(tmp_path, kind):
    path = tmp_path / kind
    if kind == "unsafe.pth":
        torch.save({"model": {"w": torch.zeros(2)}, "payload": Payload()}, path)
    else:
        torch.save({"w": torch.zeros(64)}, path)
        path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RadpathError, match=f"pretrained weights file {path}"):
        read_source(str(path))


# ---------------------------------------------------------------- 9. orphans after a kill

KILLED_RUN = """
import sys
from pathlib import Path
from radpath.engine.config import load_config
from radpath.engine.run import train
manifest, cache, out, repo = sys.argv[1:5]
config = load_config(Path(repo) / "configs" / "tiny.yaml",
                     [f"data.cache_dir={cache}", "optim.epochs=500", "data.num_workers=2",
                      "trainer.progress_bar=false"])
train(config, [manifest], out, workers=2)
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="counts processes through /proc")
def test_a_sigkilled_training_run_leaves_no_worker(tiny_manifest, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.data.test_reliability import _alive, _children

    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    repo = Path(__file__).parents[2]
    run = subprocess.Popen([sys.executable, str(script), str(tiny_manifest),
                            str(tmp_path / "cache"), str(tmp_path / "run"), str(repo)], cwd=repo)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 240
        # run.json is written once caching is over: the children are then loader workers.
        while not (tmp_path / "run" / "run.json").is_file() and time.monotonic() < deadline:
            assert run.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        while len(workers := _children(run.pid)) < 2 and time.monotonic() < deadline:
            assert run.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        assert len(workers) >= 2, "no loader workers started"
        time.sleep(1.0)
        workers = _children(run.pid)
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [w for w in workers if _alive(w)] == []
    finally:
        # The workers found: once their parent is gone they are no longer its children.
        for pid in {*workers, *_children(run.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.kill()
