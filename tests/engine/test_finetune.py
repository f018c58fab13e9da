"""Fine-tuning a pretrained CNN through the real training loop: frozen warm-up, run.json."""

import json

import pytest
import timm
import torch

from radpath.engine.run import train
from radpath.errors import ConfigError

CNN = ("model.backbone.name=efficientnet_lite0", "model.backbone.shared=false",
       "data.patch_size=32", "model.backbone.mixstyle_layers=[]")


@pytest.fixture
def lite0_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict(), path)
    return path


def _trunk_weights(checkpoint):
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if ".trunks." in k and v.is_floating_point()}


def test_frozen_warm_up_keeps_the_pretrained_trunk_and_run_json_names_it(
        tiny_manifest, tiny_config, tmp_path, lite0_file):
    source = torch.load(lite0_file, weights_only=True)
    settings = (*CNN, f"model.backbone.pretrained={lite0_file}", "optim.epochs=1",
                "optim.freeze_pretrained_epochs=1")
    frozen = train(tiny_config(*settings), [tiny_manifest], tmp_path / "frozen", workers=1)
    weights = _trunk_weights(frozen.last_checkpoint)
    key = "algorithm.model.backbone.trunks.histo.blocks.2.0.conv_pw.weight"
    torch.testing.assert_close(weights[key], source["blocks.2.0.conv_pw.weight"])
    record = json.loads((tmp_path / "frozen" / "run.json").read_text())
    loaded = record["pretrained_weights"]
    assert loaded["file"] == str(lite0_file) and len(loaded["sha256"]) == 64
    assert loaded["loaded"] == 2 * 294 and loaded["unexpected"] == ["classifier.weight",
                                                                    "classifier.bias"]
    unfrozen = train(tiny_config(*settings[:-1], "optim.layer_decay=0.5",
                                 "optim.frozen_layers=2"), [tiny_manifest],
                     tmp_path / "unfrozen", workers=1)
    moved = _trunk_weights(unfrozen.last_checkpoint)
    assert not torch.equal(moved[key], source["blocks.2.0.conv_pw.weight"])
    # frozen_layers=2: the stem (layer 0) and stage 0 (layer 1) never move.
    for name in ("conv_stem.weight", "blocks.0.0.conv_dw.weight"):
        torch.testing.assert_close(
            moved[f"algorithm.model.backbone.trunks.histo.{name}"], source[name])


def test_settings_that_cannot_apply_are_refused(tiny_config):
    with pytest.raises(ConfigError, match=r"freeze_pretrained_epochs needs model\.backbone"):
        tiny_config("optim.freeze_pretrained_epochs=2")
    with pytest.raises(ConfigError, match=r"frozen_layers needs model\.backbone"):
        tiny_config("optim.frozen_layers=2")
    with pytest.raises(ConfigError, match="masked image modelling"):
        tiny_config(*CNN, "pretrain.epochs=1")
    with pytest.raises(ConfigError, match="layer_decay"):
        tiny_config("optim.layer_decay=1.5")
