"""Tissue detection, patch grid, errors and sharding on synthetic slides (always run)."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from radpath.data.wsi import Slide
from radpath.errors import ImageReadError
from radpath.slides.grid import GridConfig, make_grid, read_patch
from radpath.slides.shard import shard_indices
from radpath.slides.synthetic import write_pyramidal_tiff
from radpath.slides.tissue import TissueConfig, detect_tissue

PINK = (200, 120, 170)


def _drawn_slide() -> np.ndarray:
    """2048² px of glass: a textured pink disc with a large and a small hole, a blue pen
    stroke across the glass, and a speck."""
    rng = np.random.default_rng(0)
    image = np.full((2048, 2048, 3), 240, np.uint8)
    cv2.circle(image, (1024, 1024), 700, PINK, -1)
    noise = rng.integers(-25, 25, image.shape)
    disc = image[..., 1] == PINK[1]
    image[disc] = np.clip(image[disc] + noise[disc], 0, 255).astype(np.uint8)
    cv2.circle(image, (1024, 1024), 200, (240, 240, 240), -1)   # a lumen: stays a hole
    cv2.circle(image, (700, 800), 12, (240, 240, 240), -1)      # a tear: filled
    cv2.line(image, (50, 1900), (1900, 1950), (30, 60, 200), 40)  # blue marker
    cv2.circle(image, (100, 100), 4, PINK, -1)                   # a speck of debris
    return image


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    image = _drawn_slide()
    path = tmp_path_factory.mktemp("drawn") / "drawn.tif"
    return image, write_pyramidal_tiff(image, path, mpp=1.0)


def test_detect_tissue_handles_holes_pens_and_specks():
    mask = detect_tissue(_drawn_slide(), um_per_pixel=1.0, config=TissueConfig())
    assert mask[1024, 1024 + 600] and mask[700, 800]        # tissue, and the small hole filled
    assert not mask[1024, 1024]                              # the lumen stays background
    assert not mask[1925, 1000]                              # the pen stroke
    assert not mask[100, 100]                                # the speck
    assert not mask[50, 2000]                                # glass
    disc = np.pi * (700**2 - 200**2) / mask.size
    assert abs(mask.mean() - disc) < 0.02


def test_pen_removal_can_be_switched_off():
    on = detect_tissue(_drawn_slide(), 1.0, TissueConfig(remove_pen=False))
    assert on[1925, 1000]


def test_grid_on_a_drawn_pyramid(drawn):
    image, path = drawn
    with Slide(path) as slide:
        assert slide.level_count == 6 and slide.mpp == 1.0
        grid = make_grid(slide, GridConfig(mpp=2.0, size=128, min_tissue=0.5))
        assert (grid.level, grid.read_size, grid.level0_size) == (1, 128, 256)
        centres = grid.coords + 128
        radius = np.hypot(centres[:, 0] - 1024, centres[:, 1] - 1024)
        assert (radius < 700 + 128).all() and (radius > 200 - 128).all()
        assert len(grid.coords) > 20
        patch = read_patch(slide, grid, 3)
        x, y = grid.coords[3]
        expected = cv2.resize(image, (1024, 1024), interpolation=cv2.INTER_AREA)
        assert np.array_equal(patch, expected[y // 2:y // 2 + 128, x // 2:x // 2 + 128])


def test_resampled_patches_come_out_at_the_target_size(drawn):
    _, path = drawn
    with Slide(path) as slide:
        grid = make_grid(slide, GridConfig(mpp=1.5, size=64))
        assert grid.level == 0 and grid.read_size == 96
        assert read_patch(slide, grid, 0).shape == (64, 64, 3)


def test_mpp_override_and_missing_mpp(drawn, tmp_path):
    _, path = drawn
    with Slide(path, mpp=0.25) as slide:
        assert slide.info().mpp_source == "override"
        assert make_grid(slide, GridConfig(mpp=0.5, size=256)).level0_size == 512
    import tifffile

    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, _drawn_slide()[:512, :512], tile=(256, 256))
    with Slide(bare) as slide, pytest.raises(ImageReadError, match=r"bare\.tif.*--slide-mpp"):
        slide.require_mpp()


def test_unreadable_slides_name_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"missing\.svs: slide not found"):
        Slide(tmp_path / "missing.svs")
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide")
    with pytest.raises(ImageReadError, match=r"junk\.svs: cannot be read as a whole-slide"):
        Slide(junk)


def test_shards_cover_every_slide_once_and_balance():
    sizes = [500, 10, 10, 10, 400, 90, 5, 300]
    shards = [shard_indices(sizes, rank, 3) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(len(sizes)))
    loads = [sum(sizes[i] for i in s) for s in shards]
    assert max(loads) <= 500
    assert shard_indices(sizes, 0, 1) == list(range(len(sizes)))
    with pytest.raises(ValueError, match="rank 3"):
        shard_indices(sizes, 3, 3)


def test_cli_ingest_wsi_and_tiles(drawn, tmp_path):
    from typer.testing import CliRunner

    from radpath.cli.main import _register_commands, app

    _, path = drawn
    slides_dir = tmp_path / "slides"
    (slides_dir / "site-a").mkdir(parents=True)
    (slides_dir / "site-a" / "drawn.tif").write_bytes(path.read_bytes())
    (slides_dir / "broken.svs").write_bytes(b"truncated")
    _register_commands()
    runner = CliRunner()
    out = tmp_path / "slides.csv"
    result = runner.invoke(app, ["ingest", "wsi", str(slides_dir), "--out", str(out),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["image_id"] for r in rows] == ["site-a-drawn"]
    assert (rows[0]["mpp"], rows[0]["modality"], rows[0]["levels"]) == ("1.0", "histo", "6")
    skipped = list(csv.DictReader((tmp_path / "skipped.csv").open()))
    assert [s["path"].endswith("broken.svs") for s in skipped] == [True]
    result = runner.invoke(app, ["tiles", str(out), "--mpp", "2", "--size", "128",
                                 "--out", str(tmp_path / "coords"), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "coords" / "site-a-drawn.h5").is_file()


def test_sparse_tiles_read_as_white_glass(tmp_path):
    from radpath.slides.synthetic import write_procedural_tiff

    def draw(level, x, y, tile):  # only the tile at (256, 0) holds pixels
        return np.full((tile, tile, 3), (200, 100, 150), np.uint8) if (x, y) == (256, 0) \
            else None

    path = write_procedural_tiff(tmp_path / "sparse.tif", width=768, height=512, mpp=0.5,
                                 draw=draw, tile=256)
    with Slide(path) as slide:
        region = slide.read_region(200, 0, 0, 120, 300)
    assert (region[:256, :56] == 255).all()            # the tile at (0, 0): written as glass
    assert (region[:256, 56:] == (200, 100, 150)).all()  # the drawn tile
    assert (region[256:] == 255).all()                  # tiles left out of the file
