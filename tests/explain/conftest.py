"""A tiny trained run, a random tiny model, and case files for the explanation tests."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from radpath.data.manifest import read_manifest
from radpath.engine.checkpoint import load_run
from radpath.models.backbone import BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cohort(tiny_manifest) -> Path:
    return tiny_manifest


@pytest.fixture(scope="session")
def run_dir(tiny_run) -> Path:
    return tiny_run


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
