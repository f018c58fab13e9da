"""A tiny trained run and the app serving it, shared by the server tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the server extras (fastapi, python-multipart) are "
                                      "not installed")
pytest.importorskip("multipart", reason="python-multipart is not installed")

REPO = Path(__file__).resolve().parents[2]
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "SECRET-ID-42"


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A run folder trained in about a second with configs/tiny.yaml."""
    from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
    from radpath.data.workflow import combine_pair_split
    from radpath.engine.config import load_config
    from radpath.engine.run import train

    root = tmp_path_factory.mktemp("serve-run")
    source = make_synthetic_cohort(root / "cohort", SyntheticConfig(
        n_patients=12, mammo_size=64, tile_size=64, seed=3))
    manifest = root / "cohort.csv"
    combine_pair_split([source], manifest, seed=0, fractions=(0.6, 0.4, 0.0))
    config = load_config(REPO / "configs" / "tiny.yaml",
                         [f"data.cache_dir={root / 'cache'}", "optim.epochs=1"])
    train(config, [manifest], root / "run", workers=1)
    return root / "run"


@pytest.fixture(scope="session")
def client(tiny_run):
    from fastapi.testclient import TestClient

    from radpath.serve import create_app

    with TestClient(create_app(tiny_run, threads=1)) as test_client:
        yield test_client


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def mammogram(size: int = 64, seed: int = 0) -> np.ndarray:
    """A greyscale breast-like image: a bright half-disc with a denser blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    breast = ((xx ** 2 + (yy - 0.5) ** 2) < 0.6).astype(float) * 0.5
    blob = np.exp(-(((xx - 0.35) ** 2 + (yy - 0.55) ** 2) / 0.005)) * 0.4
    image = np.clip(breast + blob + rng.normal(0, 0.03, (size, size)), 0, 1)
    return (image * 255).astype(np.uint8)


def histology(size: int = 64, seed: int = 1) -> np.ndarray:
    """An RGB H&E-like tile: pink stroma with purple nuclei."""
    rng = np.random.default_rng(seed)
    tile = np.empty((size, size, 3), np.uint8)
    tile[...] = (230, 160, 200)
    nuclei = rng.random((size, size)) < 0.15
    tile[nuclei] = (110, 60, 160)
    return tile


@pytest.fixture(scope="session")
def mammo_png() -> bytes:
    return png(mammogram())


@pytest.fixture(scope="session")
def histo_png() -> bytes:
    return png(histology())


def dicom_bytes(*, truncate: bool = False) -> bytes:
    """A 64 x 64 MONOCHROME2 mammogram whose header names a (fictional) patient."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19610203"
    ds.StudyDate = "20240517"
    ds.AccessionNumber = "ACC-778899"
    ds.InstitutionName = "Hidden Valley Hospital"
    ds.Modality = "MG"
    ds.Rows = ds.Columns = 64
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = (mammogram().astype(np.uint16) * 16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    return data[: len(data) - 3000] if truncate else data


def pytest_configure(config):
    # Also declared in pyproject.toml; repeated here so this folder runs on its own.
    config.addinivalue_line("markers", "browser: end-to-end tests in Debian's Chromium")
