"""Self-supervised pretraining: inside a training run, and on its own (`radpath pretrain`)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from radpath.cli.main import _register_commands, app
from radpath.data.manifest import read_manifest, write_manifest
from radpath.engine.pretrain import pretrain
from radpath.engine.run import train
from radpath.errors import RadpathError
from radpath.models.backbone import BackboneConfig, SharedBackbone
from tests.engine.conftest import REPO, images_per_epoch

runner = CliRunner()
_register_commands()


def test_training_run_pretrains_on_its_training_split_only(tiny_manifest, tiny_config,
                                                           tmp_path):
    config = tiny_config("pretrain.epochs=2")
    train(config, [tiny_manifest], tmp_path / "run", workers=1)
    record = json.loads((tmp_path / "run" / "run.json").read_text())["pretrain"]
    per_epoch = images_per_epoch(tiny_manifest, config, "train")
    everything = images_per_epoch(tiny_manifest, config, None)
    assert record["images_seen"] == {k: 2 * v for k, v in per_epoch.items()}
    assert per_epoch["mammo"] < everything["mammo"]  # validation films exist, unseen
    assert record["epochs"] == 2 and record["first_epoch_loss"] > 0
    assert list((tmp_path / "run" / "tensorboard" / "pretrain").glob("events.out.*"))


def test_pretraining_changes_the_start_and_repeats_exactly(tiny_manifest, tiny_config,
                                                           tmp_path):
    def backbone(name, *overrides):
        run = train(tiny_config("optim.epochs=1", *overrides), [tiny_manifest],
                    tmp_path / name, workers=1)
        state = torch.load(run.last_checkpoint, weights_only=True)["state_dict"]
        return {k: v for k, v in state.items() if ".backbone." in k}

    first = backbone("a", "pretrain.epochs=2")
    second = backbone("b", "pretrain.epochs=2")
    plain = backbone("c")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], plain[k]) for k in first)


def test_pretrain_command_writes_weights_a_model_loads(tiny_manifest, tiny_config, tmp_path):
    # Labels are not needed: strip them.
    unlabelled = tmp_path / "unlabelled.csv"
    write_manifest([r.with_(label="") for r in read_manifest(tiny_manifest)], unlabelled)
    cache = tiny_config().data.cache_dir
    out = tmp_path / "pre"
    result = runner.invoke(app, [
        "pretrain", "--manifest", str(unlabelled), "--out", str(out), "--config",
        str(REPO / "configs" / "tiny.yaml"), "--set", f"data.cache_dir={cache}",
        "--set", "pretrain.epochs=2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    weights = out / "backbone.safetensors"
    assert f"model.backbone.pretrained={weights}" in result.output.replace("\n", "")
    record = json.loads((out / "run.json").read_text())
    assert record["split"] is None and record["images_seen"]["histo"] > 0
    backbone_config = tiny_config().model.backbone.model_dump()
    loaded = SharedBackbone(BackboneConfig(**{**backbone_config, "pretrained": str(weights)}))
    report = loaded.pretrained_report
    assert not report.missing and not report.unexpected and report.loaded
    assert len(report.loaded) == len(loaded.state_dict())


def test_pretraining_switched_off_or_without_images_is_refused(tiny_manifest, tiny_config,
                                                               tmp_path):
    with pytest.raises(RadpathError, match=r"pretrain\.epochs is 0"):
        pretrain(tiny_config(), [tiny_manifest], tmp_path / "off")
    with pytest.raises(RadpathError, match="'holdout' split has no images"):
        pretrain(tiny_config("pretrain.epochs=1"), [tiny_manifest], tmp_path / "none",
                 split="holdout", workers=1)


def test_pretraining_can_keep_to_one_modality(tiny_manifest, tiny_config, tmp_path):
    config = tiny_config("pretrain.epochs=1", "pretrain.modalities=[histo]", "optim.epochs=1")
    train(config, [tiny_manifest], tmp_path / "run", workers=1)
    seen = json.loads((tmp_path / "run" / "run.json").read_text())["pretrain"]["images_seen"]
    assert seen["mammo"] == 0
    assert seen["histo"] == images_per_epoch(tiny_manifest, config, "train")["histo"]


@pytest.mark.parametrize("compiled", [False, True])
def test_pretrain_command_compiles_as_training_does(tiny_manifest, tiny_config, tmp_path,
                                                    monkeypatch, compiled):
    seen = []
    monkeypatch.setattr(SharedBackbone, "use_compiled",
                        lambda self, enabled=True: seen.append(enabled))
    pretrain(tiny_config("pretrain.epochs=1", f"trainer.compile={compiled}"), [tiny_manifest],
             tmp_path / "pre", workers=1)
    assert seen == [compiled]
