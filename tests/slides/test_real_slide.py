"""The real DICOM WSI and a pyramidal TIFF of its pixels: levels, mpp, mask, grid, pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest

from radpath.data.wsi import Slide
from radpath.slides.grid import GridConfig, make_grid, read_coords, read_patch, write_coords

pytestmark = pytest.mark.realdata


def _jpeg_frames(folder):
    """Level 0's JPEG frames decoded by Pillow (libjpeg), independently of OpenSlide."""
    import pydicom
    from PIL import Image
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(folder / "level-0-frames-0-30.dcm")
    frames = generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))
    tile = int(ds.Columns)
    return tile, [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in frames]


def test_dicom_levels_and_metadata(dicom_wsi):
    with Slide(dicom_wsi) as slide:
        info = slide.info()
        assert slide.backend == "openslide"
        assert slide.level_count == 12
        assert slide.dimensions == (2220, 2967)
        assert slide.level_dimensions[1] == (1110, 1483)
        assert slide.level_dimensions[-1] == (1, 1)
        assert info.mpp == pytest.approx(0.499) and info.mpp_source == "metadata"
        assert info.magnification == pytest.approx(20.04, abs=0.01)


def test_dicom_pixels_equal_the_jpeg_frames_decoded_by_pillow(dicom_wsi, dicom_pixels):
    # The frames are JFIF (YCbCr) under a header that says RGB; the reader repairs that.
    tile, frames = _jpeg_frames(dicom_wsi)
    columns = -(-2220 // tile)
    for index in (0, 7, 16, 29):
        row, col = divmod(index, columns)
        region = dicom_pixels[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile]
        reference = frames[index][:region.shape[0], :region.shape[1]]
        assert np.abs(region.astype(int) - reference).max() <= 1
    glass = dicom_pixels[:200, :200].reshape(-1, 3).mean(0)
    assert glass.min() > 230 and np.ptp(glass) < 5  # white glass, not YCbCr's pink


def test_wsidicom_fallback_reads_the_same_pixels(dicom_wsi, dicom_pixels):
    pytest.importorskip("wsidicom")
    with Slide(dicom_wsi, backend="wsidicom") as slide:
        assert slide.dimensions == (2220, 2967) and slide.mpp == pytest.approx(0.499)
        region = slide.read_region(700, 1200, 0, 300, 200)
        # At (0, 0): elsewhere OpenSlide maps level-0 to level-1 pixels by its mean
        # downsample (2.0003 here), wsidicom by 2, a pixel apart.
        half = slide.read_region(0, 0, 1, 100, 100)
    assert np.array_equal(region, dicom_pixels[1200:1400, 700:1000])
    with Slide(dicom_wsi) as slide:
        assert np.array_equal(half, slide.read_region(0, 0, 1, 100, 100))


def test_pyramidal_tiff_of_the_same_pixels(tiff_wsi, dicom_pixels):
    with Slide(tiff_wsi) as slide:
        info = slide.info()
        assert (info.vendor, info.mpp, info.mpp_source) == ("generic-tiff", 0.499, "metadata")
        assert slide.level_dimensions[:3] == ((2220, 2967), (1110, 1483), (555, 741))
        assert np.array_equal(slide.read_region(1001, 1503, 0, 257, 129),
                              dicom_pixels[1503:1632, 1001:1258])


@pytest.mark.parametrize("which", ["dicom", "tiff"])
def test_tissue_mask_and_grid(which, dicom_wsi, tiff_wsi, dicom_pixels):
    with Slide(dicom_wsi if which == "dicom" else tiff_wsi) as slide:
        grid = make_grid(slide, GridConfig(mpp=0.5, size=256, min_tissue=0.25))
        # 0.499 µm/px is within the 2% tolerance of 0.5: read level 0 as it is.
        assert (grid.level, grid.read_size, grid.level0_size) == (0, 256, 256)
        tissue = grid.tissue.mean()
        assert 0.25 < tissue < 0.5, tissue  # a strip of tissue on glass
        height, width = grid.tissue.shape
        assert not grid.tissue[: height // 10, : width // 10].any()  # the glass corner
        assert grid.tissue[int(height * 0.6), int(width * 0.4)]  # inside the strip
        x, y = grid.coords[:, 0], grid.coords[:, 1]
        assert len(grid.coords) > 20
        assert (x % 256 == 0).all() and (y % 256 == 0).all()
        assert (x + 256 <= 2220).all() and (y + 256 <= 2967).all()
        for index in (0, len(grid.coords) // 2, len(grid.coords) - 1):
            cx, cy = (int(v) for v in grid.coords[index])
            patch = read_patch(slide, grid, index)
            assert np.array_equal(patch, dicom_pixels[cy:cy + 256, cx:cx + 256])


def test_dicom_and_tiff_agree_on_mask_and_grid(dicom_wsi, tiff_wsi):
    with Slide(dicom_wsi) as a, Slide(tiff_wsi) as b:
        grid_a, grid_b = make_grid(a), make_grid(b)
    union = (grid_a.tissue | grid_b.tissue).sum()
    assert (grid_a.tissue & grid_b.tissue).sum() / union > 0.95
    same = {tuple(c) for c in grid_a.coords} & {tuple(c) for c in grid_b.coords}
    assert len(same) >= 0.9 * max(len(grid_a.coords), len(grid_b.coords))


def test_coarser_mpp_reads_a_coarser_level(dicom_wsi):
    with Slide(dicom_wsi) as slide:
        grid = make_grid(slide, GridConfig(mpp=2.0, size=128))
        assert (grid.level, grid.read_size, grid.level0_size) == (2, 128, 512)
        patch = read_patch(slide, grid, 0)
        x, y = (int(v) for v in grid.coords[0])
        assert np.array_equal(patch, slide.read_region(x, y, 2, 128, 128))


def test_clam_coords_file(dicom_wsi, tmp_path):
    import h5py

    with Slide(dicom_wsi) as slide:
        grid = make_grid(slide)
    path = write_coords(grid, tmp_path / "cmu.h5", name="cmu")
    with h5py.File(path) as handle:
        data = handle["coords"]
        assert data.dtype == np.int64 and data.shape == (len(grid.coords), 2)
        assert (data.attrs["patch_size"], data.attrs["patch_level"]) == (256, 0)
        assert data.attrs["mpp"] == 0.5 and data.attrs["slide_mpp"] == pytest.approx(0.499)
    stored = read_coords(path)
    assert np.array_equal(stored.coords, grid.coords) and stored.target_size == 256
    assert not list(tmp_path.glob(".*.tmp"))
