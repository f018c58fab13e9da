"""Snapshot ensembles: cosine cycles (optim.cycles), a checkpoint at the end of each, and
their mean logit through ``--checkpoint snapshots``."""

from __future__ import annotations

import shutil

import pytest
import torch

from radpath.engine.checkpoint import load_members
from radpath.engine.config import load_config
from radpath.engine.module import lr_factor
from radpath.engine.run import train
from radpath.errors import ConfigError, RadpathError
from radpath.evaluation.runner import evaluate_run
from tests.conftest import REPO_ROOT
from tests.evaluation import assert_mean_logit_of


def test_each_cycle_restarts_the_cosine_at_the_full_rate():
    factor = lr_factor(warmup=2, total=20, decay=True, cycles=2)
    assert [factor(s) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert factor(6) == pytest.approx(0.5)  # half-way through the first cycle's cosine
    assert factor(9) < 0.05 and factor(19) < 0.05  # each cycle ends near zero
    assert factor(10) == 1.0 and factor(15) == pytest.approx(0.5)
    one = lr_factor(warmup=2, total=20, decay=True)
    assert [one(s) for s in range(21)] == [lr_factor(2, 20, decay=True, cycles=1)(s)
                                          for s in range(21)]
    assert one(11) == pytest.approx(0.5)


@pytest.mark.parametrize(("overrides", "message"), [
    (["optim.epochs=5", "optim.cycles=2"], r"optim.epochs \(5\) must be a multiple"),
    (["optim.cycles=2", "optim.schedule=constant"], r"optim.cycles \(2\) needs optim.schedule"),
    (["optim.epochs=4", "optim.cycles=2", "optim.warmup_epochs=3"],
     r"optim.warmup_epochs \(3.0\) must fit"),
])
def test_cycles_that_cannot_end_on_an_epoch_are_refused(tiny_config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(*overrides)


@pytest.fixture(scope="module")
def cycled_run(tiny_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("cycled-run")
    config = load_config(REPO_ROOT / "configs" / "tiny.yaml",
                         [f"data.cache_dir={root / 'cache'}", "optim.epochs=4",
                          "optim.cycles=2"])
    train(config, [tiny_manifest], root / "run", workers=1)
    return root / "run"


def test_a_snapshot_is_kept_at_the_end_of_each_cycle(cycled_run):
    folder = cycled_run / "checkpoints"
    assert sorted(p.name for p in folder.glob("snapshot-*")) == ["snapshot-001.ckpt",
                                                                 "snapshot-003.ckpt"]
    final = torch.load(folder / "snapshot-003.ckpt", weights_only=True)["state_dict"]
    last = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]
    first = torch.load(folder / "snapshot-001.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], last[k]) for k in last)
    assert any(not torch.equal(first[k], last[k]) for k in last)


def test_snapshots_are_scored_by_their_mean_logit(cycled_run, tiny_manifest, tmp_path):
    # Each snapshot on its own, as the last checkpoint of a copy of the run folder.
    alone = []
    for snapshot in ("snapshot-001.ckpt", "snapshot-003.ckpt"):
        copy = tmp_path / snapshot
        (copy / "checkpoints").mkdir(parents=True)
        for name in ("config.yaml", "run.json"):
            shutil.copy(cycled_run / name, copy / name)
        shutil.copy(cycled_run / "checkpoints" / snapshot, copy / "checkpoints" / "last.ckpt")
        alone.append(evaluate_run(copy, [tiny_manifest], tmp_path / f"alone-{snapshot}",
                                  split="val", checkpoint="last", n_boot=20,
                                  progress=False).predictions)
    joint = evaluate_run(cycled_run, [tiny_manifest], tmp_path / "joint", split="val",
                         checkpoint="snapshots", n_boot=20, progress=False)
    assert_mean_logit_of(alone, joint.predictions)
    assert joint.ensemble == "mean logit of 2 checkpoints of 1 run per unit"
    assert "snapshot-001.ckpt, snapshot-003.ckpt" in joint.report_path.read_text()


def test_a_run_without_snapshots_says_why(tiny_run):
    with pytest.raises(RadpathError, match=r"optim\.cycles is above 1, and this run's is 1"):
        load_members(tiny_run, which="snapshots")
