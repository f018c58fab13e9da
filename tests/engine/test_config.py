"""The shipped configs validate, settings that must agree across sections do, and the
learning-rate schedule has the shape it says."""

from __future__ import annotations

from pathlib import Path

import pytest

from radpath.engine.config import check_trainable, load_config, with_algorithm
from radpath.engine.module import lr_factor
from radpath.engine.run import train
from radpath.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def test_the_documented_configs_ship():
    assert {"tiny", "demo", "real-cpu", "paper"} <= {path.stem for path in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda path: path.stem)
def test_every_shipped_config_validates(path):
    config = load_config(path)
    # Predicting on fewer tiles than a training draw would throw tissue away.
    assert config.data.eval_tiles is None or config.data.eval_tiles >= config.data.max_tiles


@pytest.mark.parametrize(("backbone", "patch"), [("vit_test", 8), ("vit_base", 16)])
def test_patch_size_defaults_to_the_backbones(backbone, patch):
    config = load_config(None, [f"model.backbone.name={backbone}"])
    assert config.data.patch_size == patch


def test_a_patch_size_the_backbone_does_not_have_is_refused():
    with pytest.raises(ConfigError, match=r"data\.patch_size \(16\).*vit_test.*\(8\)"):
        load_config(REPO / "configs" / "tiny.yaml", ["data.patch_size=16"])


@pytest.mark.parametrize("algorithm", ["mixstyle", "paper"])
def test_mixstyle_without_blocks_to_mix_after_is_refused(algorithm, tmp_path):
    # No block to mix after, so MixStyle would silently never run. Refused by train()
    # before it reads a manifest; the config itself still loads (old run folders must
    # stay readable).
    config = load_config(None, [f"algorithm.name={algorithm}", "model.backbone.mixstyle_layers=[]"])
    with pytest.raises(ConfigError, match=rf"'{algorithm}'.*mixstyle_layers is empty"):
        train(config, [tmp_path / "absent.csv"], tmp_path / "run")
    check_trainable(load_config(None, [f"algorithm.name={algorithm}"]))  # default: block 0


def test_an_unknown_algorithm_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown algorithm 'ermm'; known: coral, erm"):
        check_trainable(load_config(None, ["algorithm.name=ermm"]))


def test_switching_algorithm_checks_the_new_one():
    # The CV and LODO protocols train each algorithm of one config: each is checked.
    config = load_config(REPO / "configs" / "real-cpu.yaml",
                         ["model.backbone.mixstyle_layers=[]"])
    switched = with_algorithm(config, "irm")
    assert switched.algorithm.name == "irm"
    assert switched.model_dump(exclude={"algorithm"}) == config.model_dump(exclude={"algorithm"})
    with pytest.raises(ConfigError, match=r"'paper'.*mixstyle_layers"):
        with_algorithm(config, "paper")


def test_lr_factor_warms_up_then_decays_or_holds():
    cosine = lr_factor(warmup=4, total=14, decay=True)
    constant = lr_factor(warmup=4, total=14, decay=False)
    assert [cosine(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [constant(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert cosine(4) == 1.0 and cosine(9) == pytest.approx(0.5) and cosine(14) == pytest.approx(0.0)
    assert [constant(s) for s in (4, 9, 14)] == [1.0, 1.0, 1.0]


def test_backbone_lr_scale_splits_the_groups_of_the_fused_optimizer():
    import torch

    from radpath.algorithms import ALGORITHMS
    from radpath.engine.module import split_backbone_lr
    from radpath.models.crossmodal import CrossModalModel

    config = load_config(REPO / "configs" / "tiny.yaml")
    algorithm = ALGORITHMS.get("erm")(CrossModalModel(config.model), config.algorithm,
                                      domains=["a"], seed=0)
    optimizer = algorithm.make_optimizer(lr=1e-3, weight_decay=0.05)
    backbone = {id(p) for p in algorithm.model.backbone.parameters()}
    split = split_backbone_lr(optimizer, backbone, 0.1)
    rates = {id(p): g["lr"] for g in split.param_groups for p in g["params"]}
    assert len(rates) == sum(1 for _ in algorithm.parameters())  # each parameter once
    assert all(rates[i] == pytest.approx(1e-4) for i in backbone)
    assert all(rate == 1e-3 for i, rate in rates.items() if i not in backbone)
    assert {g["weight_decay"] for g in split.param_groups} == {0.05, 0.0}
    for param in algorithm.parameters():
        param.grad = torch.ones_like(param)
    split.step()  # the fused AdamW steps over the new groups


def test_clipping_under_fp16_is_refused_with_the_keys():
    with pytest.raises(ConfigError, match=r"optim\.grad_clip.*16-mixed.*bf16-mixed"):
        load_config(REPO / "configs" / "tiny.yaml", ["trainer.precision=16-mixed"])
    config = load_config(REPO / "configs" / "tiny.yaml",
                         ["trainer.precision=16-mixed", "optim.grad_clip=0"])
    assert config.trainer.precision == "16-mixed"
