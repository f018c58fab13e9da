import numpy as np
import pytest
from PIL import Image

from radpath.data.cache import ArrayCache
from radpath.data.histo import HistoConfig
from radpath.data.mammo import MammoConfig
from radpath.data.manifest import read_manifest
from radpath.data.preprocess import (
    PreprocessConfig,
    RecordPreprocessor,
    cache_manifest,
    load_cached,
)
from radpath.data.preview import write_preview
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from radpath.data.workflow import combine_pair_split
from radpath.errors import ConfigError

SMALL = PreprocessConfig(mammo=MammoConfig(size=64), histo=HistoConfig(tile_size=32))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    return read_manifest(make_synthetic_cohort(root, SyntheticConfig(n_patients=6,
                                                                     mammo_size=128)))


def test_mammo_lesions_land_on_the_bright_lesion(cohort):
    pre = RecordPreprocessor(SMALL)
    record = next(r for r in cohort if r.modality == "mammo" and r.lesions)
    item = pre(record)
    assert item.image.shape == (64, 64) and item.image.dtype == np.float32
    lesion = item.lesions[0]
    assert item.image[int(lesion.y), int(lesion.x)] > np.median(item.image[item.image > 0])
    back = item.geometry.lesion_to_original(lesion)
    assert (back.x, back.y) == pytest.approx((record.lesions[0].x, record.lesions[0].y), abs=1e-6)


def test_histo_becomes_stain_normalised_tiles(cohort):
    item = RecordPreprocessor(SMALL)(next(r for r in cohort if r.modality == "histo"))
    assert item.image.ndim == 4 and item.image.shape[1:] == (32, 32, 3)
    assert item.image.dtype == np.uint8 and len(item.tile_xy) == len(item.image)


def test_histo_scale_tiles_the_resized_image_with_corners_in_original_pixels(cohort):
    record = next(r for r in cohort if r.modality == "histo")
    cfg = PreprocessConfig(histo=HistoConfig(tile_size=32, min_tissue=0.0,
                                             stain_method="none"), max_tiles=64)
    full = RecordPreprocessor(cfg)(record)
    half = RecordPreprocessor(cfg.model_copy(
        update={"histo": cfg.histo.model_copy(update={"scale": 0.5})}))(record)
    assert len(full.image) == 16 and len(half.image) == 4  # 128 px tile: 4x4, then 2x2
    assert sorted(map(tuple, half.tile_xy.tolist())) == [(0, 0), (0, 64), (64, 0), (64, 64)]
    # A half-scale tile is the area-average of the full-resolution pixels it covers.
    source = np.asarray(Image.open(record.path).convert("RGB"), dtype=np.float64)
    corner = next(i for i, xy in enumerate(half.tile_xy.tolist()) if xy == [64, 0])
    expected = source[0:64, 64:128].reshape(32, 2, 32, 2, 3).mean(axis=(1, 3))
    assert np.abs(half.image[corner] - expected).max() <= 1.0


def test_reinhard_without_reference_names_the_key():
    with pytest.raises(ConfigError, match="stain_reference"):
        RecordPreprocessor(PreprocessConfig(histo=HistoConfig(stain_method="reinhard")))


def test_cache_is_reused_and_invalidated_by_config(cohort, tmp_path):
    first = cache_manifest(cohort, tmp_path, SMALL, workers=1, progress=False)
    again = cache_manifest(cohort, tmp_path, SMALL, workers=2, progress=False)
    assert (first.done, first.hits, first.failed) == (len(cohort), 0, [])
    assert (again.done, again.hits) == (len(cohort), len(cohort))
    changed = SMALL.model_copy(update={"mammo": MammoConfig(size=96)})
    third = cache_manifest(cohort, tmp_path, changed, workers=1, progress=False)
    mammo_count = sum(r.modality == "mammo" for r in cohort)
    assert third.hits == len(cohort) - mammo_count  # only the mammograms' config changed


def test_cached_arrays_equal_fresh_ones(cohort, tmp_path):
    pre = RecordPreprocessor(SMALL)
    cache = ArrayCache(tmp_path)
    record = next(r for r in cohort if r.modality == "histo")
    stored = load_cached(record, cache, pre)
    assert np.array_equal(load_cached(record, cache, pre)["image"], pre(record).image)
    assert np.array_equal(stored["image"], pre(record).image)


def test_cache_reports_a_failure_without_stopping(cohort, tmp_path):
    bad = tmp_path / "flat.png"
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(bad)
    manifest = type(cohort)([*list(cohort)[:2], cohort[0].with_(image_id="bad", path=str(bad))])
    report = cache_manifest(manifest, tmp_path / "c", SMALL, workers=1, progress=False)
    assert report.done == 2 and report.failed[0][0] == str(bad)
    assert "constant" in report.failed[0][1]


def test_preview_and_pairing_workflow(cohort, tmp_path):
    combined, summary = combine_pair_split([cohort.source], tmp_path / "c.csv", seed=1)
    assert {r.split for r in combined} == {"train", "val", "test"}
    assert summary["true"] > 0
    assert summary["true"] + summary["pseudo"] + summary["unpaired"] == len(combined.patients())
    out = write_preview(combined, tmp_path / "p.png", per_domain=2, config=SMALL)
    grid = np.asarray(Image.open(out))
    domains = {(r.modality, r.domain) for r in combined}
    assert grid.shape[0] == 192 * len(domains) and grid.std() > 10
