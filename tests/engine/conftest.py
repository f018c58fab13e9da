"""A tiny synthetic cohort and the tiny config, shared by the training tests."""

from pathlib import Path

import pytest

from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from radpath.data.workflow import combine_pair_split
from radpath.engine.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny-cohort")
    source = make_synthetic_cohort(root, SyntheticConfig(n_patients=12, mammo_size=64,
                                                         tile_size=64, seed=3))
    out = root / "cohort.csv"
    combine_pair_split([source], out, seed=0, fractions=(0.6, 0.4, 0.0))
    return out


@pytest.fixture
def tiny_config(tmp_path_factory):
    """configs/tiny.yaml with its cache in a temporary folder; pass overrides as needed."""
    cache = tmp_path_factory.mktemp("cache")

    def make(*overrides: str):
        return load_config(REPO / "configs" / "tiny.yaml",
                           [f"data.cache_dir={cache}", *overrides])

    return make
