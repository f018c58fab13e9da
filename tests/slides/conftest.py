"""Slide fixtures: the real DICOM WSI of ../shared/data, and a pyramidal TIFF of its pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA

WSI_DIR = SHARED_DATA / "wsi" / "cmu-1-small-region"


@pytest.fixture(scope="session")
def dicom_wsi() -> Path:
    if not WSI_DIR.is_dir():
        pytest.skip(f"real DICOM WSI not found at {WSI_DIR} (../shared/data is absent)")
    return WSI_DIR


@pytest.fixture(scope="session")
def dicom_pixels(dicom_wsi) -> np.ndarray:
    """Level 0 of the real slide, whole: a 6.6-megapixel region, fine for a test only."""
    from radpath.data.wsi import Slide

    with Slide(dicom_wsi) as slide:
        width, height = slide.dimensions
        return slide.read_region(0, 0, 0, width, height)


@pytest.fixture(scope="session")
def tiff_wsi(dicom_pixels, tmp_path_factory) -> Path:
    """A tiled, zlib-compressed pyramidal TIFF written from the real slide's pixels."""
    from radpath.slides.synthetic import write_pyramidal_tiff

    path = tmp_path_factory.mktemp("tiff-wsi") / "cmu-1-small-region.tiff"
    return write_pyramidal_tiff(dicom_pixels, path, mpp=0.499)
