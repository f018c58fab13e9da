"""Real (tiny) training runs: records, determinism, resume, NaN guard, DDP."""

import json
import math
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from radpath.engine.checkpoint import load_run
from radpath.engine.config import OptimConfig
from radpath.engine.module import NonFiniteLossError, RadpathModule
from radpath.engine.run import ema_of_floats, train
from radpath.errors import ConfigError, RadpathError
from tests.algorithms import tiny_algorithm
from tests.cuda_autocast import cuda_bf16_autocast
from tests.engine.conftest import REPO, images_per_epoch


def _weights(path, key="state_dict"):
    state = torch.load(path, map_location="cpu", weights_only=True)[key]
    return {k: v for k, v in state.items() if v.is_floating_point()}


def test_run_folder_holds_config_record_checkpoints_and_logs(tiny_manifest, tiny_config,
                                                             tmp_path):
    result = train(tiny_config(), [tiny_manifest], tmp_path / "run", workers=1)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and record["seed"] == 0
    assert record["pairing_mode"] in ("true", "mixed", "pseudo")
    assert record["manifests"][str(tiny_manifest)] and record["packages"]["torch"]
    assert set(record["final_val_metrics"]) == {"mammo", "histo", "fused"}
    assert "ci_low" in record["final_val_metrics"]["fused"]
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("seed: 0")
    assert result.last_checkpoint.is_file() and result.best_checkpoint.is_file()
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    wait = record["data_wait"]  # every training step timed, waiting a share of the time
    assert wait["steps"] == record["global_steps"] and 0 <= wait["wait_share"] < 1
    assert wait["step_seconds"] > 0


def test_same_seed_same_numbers(tiny_manifest, tiny_config, tmp_path):
    config = tiny_config("algorithm.name=paper")
    first = train(config, [tiny_manifest], tmp_path / "a", workers=1)
    second = train(config, [tiny_manifest], tmp_path / "b", workers=1)
    assert first.val_metrics == second.val_metrics
    a, b = _weights(first.last_checkpoint), _weights(second.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_persistent_workers_give_the_numbers_of_the_main_process(tiny_manifest, tiny_config,
                                                                 tmp_path):
    # Workers start once and keep the dataset they began with: unless each key carries
    # its epoch, every later epoch would repeat the first epoch's draws. Masks, drop-path
    # and modality dropout draw from the global generator, which the loaders leave alone.
    settings = ("optim.epochs=3", "pretrain.epochs=2", "data.max_tiles=1",
                "model.backbone.drop_path=0.2", "model.fused_modality_dropout=0.5")
    main = train(tiny_config(*settings), [tiny_manifest], tmp_path / "main", workers=1)
    workers = train(tiny_config(*settings, "data.num_workers=2"), [tiny_manifest],
                    tmp_path / "workers", workers=1)
    assert main.val_metrics == workers.val_metrics
    a, b = _weights(main.last_checkpoint), _weights(workers.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Interrupt(Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 2:
            raise KeyboardInterrupt


@pytest.mark.parametrize("ema", ["0.0", "0.9"])
def test_resume_ends_at_the_uninterrupted_weights(tiny_manifest, tiny_config, tmp_path, ema):
    # Tile mixing too: its generator, like MixStyle's, must restart where the run stopped.
    config = tiny_config("optim.epochs=4", "algorithm.name=paper", f"optim.ema_decay={ema}",
                         "algorithm.tile_mix.p=1.0")
    whole = train(config, [tiny_manifest], tmp_path / "whole", workers=1)
    with pytest.raises(SystemExit):  # Lightning's graceful shutdown after Ctrl-C
        train(config, [tiny_manifest], tmp_path / "cut", callbacks=[_Interrupt()], workers=1)
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "interrupted"
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "last.ckpt", weights_only=True)
    assert 0 < cut["global_step"] < torch.load(whole.last_checkpoint,
                                               weights_only=True)["global_step"]
    resumed = train(config, [tiny_manifest], tmp_path / "cut", resume=True, workers=1)
    for key in ("state_dict", "current_model_state") if ema != "0.0" else ("state_dict",):
        a, b = _weights(whole.last_checkpoint, key), _weights(resumed.last_checkpoint, key)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), key


def test_ema_checkpoints_hold_the_average_that_prediction_loads(
        tiny_manifest, tiny_config, tmp_path):
    result = train(tiny_config("optim.epochs=3", "optim.ema_decay=0.5"), [tiny_manifest],
                   tmp_path / "run", workers=1)
    averaged = _weights(result.last_checkpoint)
    current = _weights(result.last_checkpoint, "current_model_state")
    assert averaged.keys() == current.keys()
    assert any(not torch.equal(averaged[k], current[k]) for k in averaged)
    loaded = load_run(tmp_path / "run", which="last").algorithm.state_dict()
    assert all(torch.equal(loaded[k.removeprefix("algorithm.")], v) for k, v in averaged.items())
    plain = train(tiny_config("optim.epochs=3"), [tiny_manifest], tmp_path / "plain", workers=1)
    # Same seed and batches: averaging leaves the trained weights as a run without it.
    assert all(torch.equal(current[k], v) for k, v in _weights(plain.last_checkpoint).items())


def test_ema_step_averages_floats_and_lets_counters_follow_the_model():
    average = ema_of_floats(0.75)
    step = torch.tensor(0)
    torch.testing.assert_close(average(torch.tensor([4.0]), torch.tensor([8.0]), step),
                               torch.tensor([5.0]))
    assert average(torch.tensor(3), torch.tensor(7), step).item() == 7


class _PoisonLoss(Callback):
    """Makes the loss NaN from the second epoch on."""

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            original = module.algorithm.compute_loss

            def poisoned(batch):
                loss, logs = original(batch)
                return loss * float("nan"), logs

            module.algorithm.compute_loss = poisoned


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_manifest, tiny_config,
                                                           tmp_path):
    with pytest.raises(NonFiniteLossError, match="last good checkpoint"):
        train(tiny_config(), [tiny_manifest], tmp_path / "run", callbacks=[_PoisonLoss()],
              workers=1)
    kept = _weights(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in kept.values())


def test_bf16_mixed_precision_trains_with_clipping_as_on_a_gpu(tiny_manifest, tiny_config,
                                                               tmp_path):
    # Lightning's bf16-mixed on CPU under CUDA's autocast output dtypes: the first GPU run of
    # configs/paper.yaml failed twice here (a float32/bf16 masked_scatter; Lightning refusing
    # to clip for the fused AdamW).
    config = tiny_config("algorithm.name=paper", "trainer.precision=bf16-mixed")
    assert config.optim.grad_clip > 0
    with cuda_bf16_autocast(enter_autocast=False):
        train(config, [tiny_manifest], tmp_path / "run", workers=1)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished"
    assert all(math.isfinite(m["value"]) for m in record["final_val_metrics"].values())
    kept = _weights(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in kept.values())


def test_invalid_config_names_the_key(tiny_config):
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        tiny_config("optim.lr=-1")
    with pytest.raises(ConfigError, match=r"model\.backbone\.colour"):
        tiny_config("model.backbone.colour=red")


def test_irm_with_one_domain_says_so(tiny_manifest, tiny_config, tmp_path):
    from radpath.data.manifest import read_manifest, write_manifest

    one = [r.with_(domain="only-site") for r in read_manifest(tiny_manifest)]
    path = write_manifest(one, tmp_path / "one.csv")
    with pytest.raises((RadpathError, ValueError), match="at least two domains"):
        train(tiny_config("algorithm.name=irm"), [path], tmp_path / "run", workers=1)


def test_manifest_without_labels_is_refused(tiny_manifest, tiny_config, tmp_path):
    from radpath.data.manifest import read_manifest, write_manifest

    path = write_manifest([r.with_(label="") for r in read_manifest(tiny_manifest)],
                          tmp_path / "unlabelled.csv")
    with pytest.raises(RadpathError, match="no labels"):
        train(tiny_config(), [path], tmp_path / "run", workers=1)


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_manifest, tiny_config, tmp_path):
    cache = tiny_config().data.cache_dir
    done = subprocess.run(
        [sys.executable, "-m", "radpath", "train", "--config", str(REPO / "configs" / "tiny.yaml"),
         "--manifest", str(tiny_manifest), "--out", str(tmp_path / "ddp"), "--devices", "2",
         "--strategy", "ddp", "--set", f"data.cache_dir={cache}", "--workers", "1",
         "--set", "pretrain.epochs=1"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert record["device"]["devices"] == 2 and record["status"] == "finished"
    # Both processes pretrained, each on its half of the training units (the sampler pads
    # the halves to equal length by repeating units).
    expected = images_per_epoch(tiny_manifest, tiny_config(), "train")["mammo"]
    assert record["pretrain"]["images_seen"]["mammo"] >= expected > 0


def test_checkpoints_follow_the_per_modality_auc_not_the_fused_one():
    from radpath.engine.module import monitored_auc
    from radpath.stats.estimate import NAN_ESTIMATE, Estimate

    def auc(value):
        return Estimate(value, value, value, 10)

    assert monitored_auc({"mammo": auc(0.6), "histo": auc(0.8), "fused": auc(1.0)}) == 0.7
    assert monitored_auc({"mammo": NAN_ESTIMATE, "histo": auc(0.8), "fused": auc(1.0)}) == 0.8
    assert monitored_auc({"mammo": NAN_ESTIMATE, "histo": NAN_ESTIMATE,
                          "fused": auc(0.9)}) == 0.9
    assert monitored_auc({"mammo": NAN_ESTIMATE, "histo": NAN_ESTIMATE,
                          "fused": NAN_ESTIMATE}) == 0.0


def test_bf16_clipping_bounds_the_gradient_norm_of_the_fused_adamw_parameters():
    module = RadpathModule(tiny_algorithm("erm"), OptimConfig())
    module.trainer = SimpleNamespace(precision="bf16-mixed")  # what the override reads
    optimizer = module.algorithm.make_optimizer()
    assert optimizer.defaults["fused"]
    for param in module.parameters():
        param.grad = torch.full_like(param, 10.0)
    module.configure_gradient_clipping(optimizer, 1.0, "norm")
    norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in module.parameters()])
    assert torch.linalg.vector_norm(norms).item() == pytest.approx(1.0, rel=1e-4)


class _RecordPrecision(Callback):
    def __init__(self):
        self.seen = []

    def on_train_start(self, trainer, module):
        self.seen.append(torch.get_float32_matmul_precision())


def test_matmul_precision_holds_while_training_and_is_restored(tiny_manifest, tiny_config,
                                                               tmp_path):
    before = torch.get_float32_matmul_precision()
    record = _RecordPrecision()
    config = tiny_config("optim.epochs=1", "pretrain.epochs=1", "trainer.matmul_precision=high")
    train(config, [tiny_manifest], tmp_path / "run", callbacks=[record], workers=1)
    assert record.seen == ["high"]
    assert torch.get_float32_matmul_precision() == before == "highest"
    with pytest.raises(ConfigError, match=r"trainer\.matmul_precision"):
        tiny_config("trainer.matmul_precision=tf32")
