"""A tiny trained run, a random tiny model, and case files for the explanation tests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radpath.data.manifest import read_manifest
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from radpath.data.workflow import combine_pair_split
from radpath.engine.checkpoint import load_run
from radpath.engine.config import load_config
from radpath.engine.run import train
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explain-cohort")
    source = make_synthetic_cohort(root, SyntheticConfig(n_patients=12, mammo_size=64,
                                                         tile_size=64, seed=5))
    out = root / "cohort.csv"
    combine_pair_split([source], out, seed=0, fractions=(0.6, 0.4, 0.0))
    return out


@pytest.fixture(scope="session")
def run_dir(cohort, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("explain-cache")
    config = load_config(REPO / "configs" / "tiny.yaml",
                         [f"data.cache_dir={cache}", "optim.epochs=1"])
    out = tmp_path_factory.mktemp("explain-run") / "run"
    train(config, [cohort], out, workers=1)
    return out


@pytest.fixture(scope="session")
def loaded_run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="session")
def case_files(cohort) -> dict[str, list[Path]]:
    """A malignant patient's mammograms and some H&E images of the cohort."""
    records = list(read_manifest(cohort))
    mammo = [Path(r.path) for r in records if r.modality == "mammo" and r.label == "malignant"]
    histo = [Path(r.path) for r in records if r.modality == "histo"]
    return {"mammo": mammo[:2], "histo": histo[:2]}


@pytest.fixture
def tiny_model() -> CrossModalModel:
    torch.manual_seed(0)
    model = CrossModalModel(ModelConfig(
        backbone=BackboneConfig(name="vit_test", img_size=32, histo_img_size=32),
        projection_dim=16, mil_hidden=16))
    return model.eval()


def write_png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path
