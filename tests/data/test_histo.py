"""Histopathology preprocessing: tissue mask, tiling, stain normalisation, HED jitter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import tifffile
from PIL import Image
from skimage.color import hed2rgb, rgb2lab

from radpath.data.histo import (
    HistoConfig,
    StainNormalizer,
    _rgb2hed,
    hed_jitter,
    most_tissue_rich,
    tile_image,
    tissue_mask,
)

UCSB_REFERENCE = "ytma10_010704_malignant1_ccd.tif"  # nearly all tissue
BREAKHIS_SOURCE = "SOB_B_A-14-22549AB-40-001.png"  # pale and grey, far from the reference


def _blob_image(height: int = 128, width: int = 160) -> np.ndarray:
    """White glass with a pink disc (eosin) holding purple dots (nuclei)."""
    rng = np.random.default_rng(0)
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 < 40**2
    image[disc] = (205, 110, 175)
    nuclei = disc & (rng.random((height, width)) < 0.15)
    image[nuclei] = (90, 60, 150)
    noise = rng.normal(0, 2, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    if path.suffix == ".tif":
        return tifffile.imread(path)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def reference(ucsb_dir: Path) -> np.ndarray:
    return _read(ucsb_dir / UCSB_REFERENCE)


@pytest.fixture(scope="module")
def source(breakhis_dir: Path) -> np.ndarray:
    return _read(breakhis_dir / BREAKHIS_SOURCE)


@pytest.fixture(scope="module")
def fitted(reference: np.ndarray) -> dict[str, StainNormalizer]:
    return {m: StainNormalizer(m).fit(reference) for m in ("macenko", "reinhard")}


@pytest.fixture(scope="module")
def synthetic() -> dict[str, StainNormalizer]:
    """Normalisers fitted to the synthetic blob, so the fallback tests need no real data."""
    return {m: StainNormalizer(m).fit(_blob_image()) for m in ("macenko", "reinhard")}


def _mean_lab(rgb: np.ndarray) -> np.ndarray:
    return rgb2lab(rgb).reshape(-1, 3).mean(axis=0)


# --- config ---------------------------------------------------------------------------------

def test_config_defaults_and_validation() -> None:
    config = HistoConfig()
    assert (config.tile_size, config.step, config.min_tissue) == (224, 224, 0.5)
    assert HistoConfig(tile_size=256, stride=128).step == 128
    with pytest.raises(pydantic.ValidationError):
        HistoConfig(stain_method="vahadane")
    with pytest.raises(pydantic.ValidationError):
        HistoConfig(tile_size=224, unknown=1)
    with pytest.raises(pydantic.ValidationError):
        HistoConfig(min_tissue=1.5)


# --- tissue mask ----------------------------------------------------------------------------

def test_tissue_mask_finds_blob_on_glass() -> None:
    image = _blob_image()
    mask = tissue_mask(image)
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    yy, xx = np.mgrid[:128, :160]
    disc = (yy - 64) ** 2 + (xx - 64) ** 2 < 40**2
    assert (mask == disc).mean() > 0.97
    assert mask[disc].mean() > 0.97  # nuclei holes are filled, not left out


@pytest.mark.parametrize("value", [255, 240, 128, 0])
def test_tissue_mask_empty_on_constant_images(value: int) -> None:
    assert not tissue_mask(np.full((64, 64, 3), value, dtype=np.uint8)).any()


def test_tissue_mask_on_near_white_noise_is_empty() -> None:
    noise = np.random.default_rng(0).integers(235, 256, (64, 64, 3), dtype=np.uint8)
    assert not tissue_mask(noise).any()


@pytest.mark.realdata
def test_tissue_mask_real_ucsb_is_mostly_tissue(reference: np.ndarray) -> None:
    assert tissue_mask(reference).mean() > 0.5


def test_tissue_mask_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="uint8"):
        tissue_mask(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        tissue_mask(np.zeros((8, 8), dtype=np.uint8))


# --- tiling ---------------------------------------------------------------------------------

def test_tile_grid_positions_and_counts() -> None:
    image = np.zeros((100, 130, 3), dtype=np.uint8)
    everything = np.ones((100, 130), dtype=bool)
    tiles = tile_image(image, tile_size=32, mask=everything)
    assert [(t.x, t.y) for t in tiles[:5]] == [(0, 0), (32, 0), (64, 0), (96, 0), (0, 32)]
    assert len(tiles) == 3 * 4  # the remainder strips (4 and 2 px) are left out
    assert all(t.image.shape == (32, 32, 3) and t.tissue_fraction == 1.0 for t in tiles)
    overlapping = tile_image(image, tile_size=32, stride=16, mask=everything)
    assert len(overlapping) == 5 * 7
    assert {t.x for t in overlapping} == set(range(0, 97, 16))


def test_tile_pixels_come_from_the_source() -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    tiles = tile_image(image, tile_size=16, stride=24, min_tissue=0.0)
    tile = next(t for t in tiles if (t.x, t.y) == (24, 48))
    np.testing.assert_array_equal(tile.image, image[48:64, 24:40])


def test_min_tissue_drops_background_tiles() -> None:
    image = _blob_image()  # the disc spans x, y in 24..104 on a 160 x 128 image
    kept = tile_image(image, tile_size=32, min_tissue=0.5)
    everything = tile_image(image, tile_size=32, min_tissue=0.0)
    assert len(everything) == 4 * 5
    assert 0 < len(kept) < len(everything)
    assert all(t.tissue_fraction >= 0.5 for t in kept)
    assert (32, 32) in {(t.x, t.y) for t in kept}
    assert (128, 0) not in {(t.x, t.y) for t in kept}


def test_small_image_is_padded_with_white() -> None:
    image = np.full((20, 30, 3), 7, dtype=np.uint8)
    mask = np.ones((20, 30), dtype=bool)
    (tile,) = tile_image(image, tile_size=40, min_tissue=0.0, mask=mask)
    assert tile.image.shape == (40, 40, 3)
    assert (tile.image[:20, :30] == 7).all() and (tile.image[20:] == 255).all()
    assert tile.tissue_fraction == pytest.approx(600 / 1600)


def test_richest_tiles_come_first_and_ties_spread_over_the_image() -> None:
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    mask = np.ones((256, 256), dtype=bool)  # 64 tiles of 32 px, all tissue ...
    mask[:16, :16] = False  # ... but the top-left one, a quarter glass
    mask[240:, 240:] = mask[240:, 224:232] = False  # and the bottom-right one, less
    tiles = tile_image(image, tile_size=32, min_tissue=0.0, mask=mask)
    kept = most_tissue_rich(tiles, 16)
    assert all(t.tissue_fraction == 1.0 for t in kept)
    rows = {t.y // 32 for t in kept}
    assert rows == set(range(8))  # raster order would have kept rows 0 and 1 only
    everything = most_tissue_rich(tiles, 100)
    assert len(everything) == 64
    assert [(t.x, t.y) for t in everything[-2:]] == [(0, 0), (224, 224)]
    assert [(t.x, t.y) for t in most_tissue_rich(tiles, 16)] == [(t.x, t.y) for t in kept]
    with pytest.raises(ValueError, match="count"):
        most_tissue_rich(tiles, 0)


def test_tile_rejects_mismatched_mask() -> None:
    with pytest.raises(ValueError, match="mask shape"):
        tile_image(np.zeros((32, 32, 3), np.uint8), tile_size=16, mask=np.ones((8, 8), bool))


# --- stain normalisation --------------------------------------------------------------------

def test_unknown_method_is_named() -> None:
    with pytest.raises(ValueError, match="vahadane"):
        StainNormalizer("vahadane")


def test_transform_before_fit_raises() -> None:
    with pytest.raises(RuntimeError, match="fit"):
        StainNormalizer("macenko").transform(_blob_image())


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_fit_on_blank_reference_raises(method: str) -> None:
    with pytest.raises(ValueError, match="constant colour"):
        StainNormalizer(method).fit(np.full((64, 64, 3), 255, dtype=np.uint8))
    glass = np.random.default_rng(0).integers(235, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="too little tissue"):
        StainNormalizer(method).fit(glass)


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_real_normalisation_moves_colour_to_reference(
        method: str, fitted: dict[str, StainNormalizer], reference: np.ndarray,
        source: np.ndarray) -> None:
    result = fitted[method].transform(source)
    assert result.normalised and result.reason == ""
    out = result.image
    assert out.dtype == np.uint8 and out.shape == source.shape
    assert np.abs(out.astype(int) - source).mean() > 5
    before = np.linalg.norm(_mean_lab(source) - _mean_lab(reference))
    after = np.linalg.norm(_mean_lab(out) - _mean_lab(reference))
    assert after < 0.5 * before


DEGENERATE = {
    "white": np.full((64, 64, 3), 255, dtype=np.uint8),
    "grey": np.full((64, 64, 3), 128, dtype=np.uint8),
    "black": np.zeros((64, 64, 3), dtype=np.uint8),
    "pink": np.full((64, 64, 3), (230, 120, 200), dtype=np.uint8),
    "near-white": np.random.default_rng(1).integers(235, 256, (64, 64, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_tiles_fall_back(method: str, name: str,
                                    synthetic: dict[str, StainNormalizer]) -> None:
    tile = DEGENERATE[name]
    result = synthetic[method].transform(tile)
    assert not result.normalised and result.reason
    np.testing.assert_array_equal(result.image, tile)


@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_noise_tiles_never_raise_or_nan(method: str, synthetic: dict[str, StainNormalizer]) -> None:
    rng = np.random.default_rng(2)
    single_colour = np.clip(rng.normal((200, 120, 180), 3, (64, 64, 3)), 0, 255)
    for tile in (rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                 single_colour.astype(np.uint8), _blob_image()):
        result = synthetic[method].transform(tile)
        assert result.image.dtype == np.uint8 and result.image.shape == tile.shape
        assert result.normalised or result.reason


def test_macenko_flags_single_colour_stain_matrix(synthetic: dict[str, StainNormalizer]) -> None:
    rng = np.random.default_rng(3)
    tile = np.clip(rng.normal((200, 120, 180), 3, (64, 64, 3)), 0, 255).astype(np.uint8)
    result = synthetic["macenko"].transform(tile)
    assert not result.normalised and "stain matrix" in result.reason


@pytest.mark.realdata
@pytest.mark.parametrize("method", ["macenko", "reinhard"])
def test_state_round_trip(method: str, fitted: dict[str, StainNormalizer],
                          source: np.ndarray) -> None:
    state = fitted[method].state()
    restored = StainNormalizer.from_state(json.loads(json.dumps(state)))
    assert restored.state() == state
    tile = source[:128, :128]
    a, b = fitted[method].transform(tile), restored.transform(tile)
    assert a.normalised == b.normalised
    assert np.abs(a.image.astype(int) - b.image).max() <= 1


def test_from_state_names_missing_keys() -> None:
    with pytest.raises(ValueError, match="stain_matrix"):
        StainNormalizer.from_state({"method": "macenko", "max_concentrations": [1.0, 1.0]})


def test_method_none_passes_through() -> None:
    image = _blob_image()
    normalizer = StainNormalizer("none").fit(image)
    result = normalizer.transform(image)
    assert result.image is image and not result.normalised and "none" in result.reason
    assert StainNormalizer.from_state(normalizer.state()).method == "none"


# --- HED jitter -----------------------------------------------------------------------------

def test_hed_jitter_is_seeded_and_changes_the_image() -> None:
    image = _blob_image()
    a = hed_jitter(image, np.random.default_rng(7))
    b = hed_jitter(image, np.random.default_rng(7))
    c = hed_jitter(image, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == image.shape
    assert not np.array_equal(a, image) and not np.array_equal(a, c)


def test_hed_jitter_of_strength_zero_is_identity() -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = hed_jitter(image, np.random.default_rng(0), sigma=0.0, bias=0.0)
    assert np.abs(out.astype(int) - image).max() <= 1


@pytest.mark.parametrize("value", [0, 255])
def test_hed_jitter_on_extreme_tiles_is_finite(value: int) -> None:
    tile = np.full((16, 16, 3), value, dtype=np.uint8)
    # The float stain amounts themselves are finite (the uint8 output is clipped, so it
    # could never show a NaN): black's log is floored at 1e-6, white's log(1) is 0.
    stains = _rgb2hed(tile)
    assert np.isfinite(stains).all()
    assert np.isfinite(hed2rgb(stains * 1.5 + 0.5)).all()
    out = hed_jitter(tile, np.random.default_rng(0), sigma=0.5, bias=0.5)
    assert out.dtype == np.uint8 and out.shape == tile.shape
    # A uniform tile stays uniform (every pixel got the same stain change), and a change of
    # strength zero gives the extreme tile back.
    assert (out == out[0, 0]).all()
    unchanged = hed_jitter(tile, np.random.default_rng(0), sigma=0.0, bias=0.0)
    assert np.abs(unchanged.astype(int) - value).max() <= 1
