"""CAMELYON16/17 sources on synthetic layouts, through tiles, cached features and slide MIL."""

from __future__ import annotations

import numpy as np
import pytest

from radpath.data.asap import patch_tumour_fraction, read_asap_xml
from radpath.data.manifest import Record
from radpath.data.sources import SOURCES, Skipped
from radpath.data.sources.camelyon16 import annotation_path
from radpath.data.wsi import Slide
from radpath.models.slide_mil import SlideMILConfig, fit_slide_mil, predict_bags
from radpath.slides.bags import build_bags
from radpath.slides.features import ColourStats, cache_features, read_features
from radpath.slides.grid import GridConfig, make_grid, write_coords
from radpath.slides.localisation import lesion_hit_rate
from tests.slides import layouts

GRID = GridConfig(mpp=1.0, size=32, min_tissue=0.5)


def _scan(name, root):
    items = list(SOURCES.get(name)(root).scan())
    return ([i for i in items if isinstance(i, Record)],
            [i for i in items if isinstance(i, Skipped)])


def _featurise(records, tmp_path):
    slides, dims = [], {}
    for record in records:
        with Slide(record.path) as slide:
            grid = make_grid(slide, GRID)
            dims[record.image_id] = slide.dimensions
        coords = write_coords(grid, tmp_path / "coords" / f"{record.image_id}.h5")
        slides.append((record.image_id, record.path, coords))
    cache_features(slides, tmp_path / "features", ColourStats(), batch_size=16)
    xmls = {r.image_id: annotation_path(__import__("pathlib").Path(r.path)) for r in records}
    return dims, xmls


@pytest.fixture(scope="module")
def c16(tmp_path_factory):
    return layouts.camelyon16(tmp_path_factory.mktemp("camelyon16"))


def test_camelyon16_records(c16):
    records, skipped = _scan("camelyon16", c16)
    by_id = {r.image_id: r for r in records}
    assert skipped == [] and len(records) == 6
    assert by_id["camelyon16-normal_001"].label == "normal"
    assert by_id["camelyon16-tumor_002"].label == "malignant"
    assert len(by_id["camelyon16-tumor_002"].lesions) == 2
    assert (by_id["camelyon16-test_002"].label, by_id["camelyon16-test_002"].split) == (
        "malignant", "test")
    assert by_id["camelyon16-test_001"].label == "normal"


def test_camelyon16_skips_what_it_cannot_use(c16, tmp_path):
    import shutil

    root = tmp_path / "c16"
    shutil.copytree(c16, root)
    (root / "testing" / "images" / "test_003.tif").write_bytes(b"not a slide")
    (root / "training" / "lesion_annotations" / "tumor_001.xml").write_text("<ASAP")
    _, skipped = _scan("camelyon16", root)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in skipped}
    assert "reference.csv" in reasons["test_003.tif"]
    assert "tumor_001.xml" in reasons["tumor_001.tif"] and "ASAP" in reasons["tumor_001.tif"]


def test_patch_tumour_fraction_follows_the_outline():
    polygon = read_asap_xml_from([layouts.square(100, 100, 64)])
    coords = np.array([[100, 100], [132, 132], [148, 100], [200, 100], [300, 300]])
    fraction = patch_tumour_fraction(polygon, coords, 32, (512, 512))
    # the straddling patch is half inside, give or take one lattice column at the edge
    assert fraction[[0, 1, 3, 4]].tolist() == [1.0, 1.0, 0.0, 0.0]
    assert abs(fraction[2] - 0.5) <= 0.125


def read_asap_xml_from(polygons, tmp=None):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "a.xml"
        layouts.asap_xml(path, polygons)
        return read_asap_xml(path)


def test_camelyon16_mil_learns_to_find_the_lesions(c16, tmp_path):
    records, _ = _scan("camelyon16", c16)
    dims, xmls = _featurise(records, tmp_path)
    features, coords = read_features(tmp_path / "features" / "camelyon16-tumor_001.h5")
    assert features.shape[1] == 6 and len(features) == len(coords) > 50
    bags = build_bags(records, tmp_path / "features", patch_size0=32, dimensions=dims,
                      annotations=xmls)
    tumour_bag = next(b for b in bags if b.patient_id == "camelyon16-tumor_001")
    assert 0 < (tumour_bag.patch_tumour > 0.5).float().mean() < 0.4
    train = [b for b in bags if not b.patient_id.startswith("camelyon16-test")]
    test = [b for b in bags if b.patient_id.startswith("camelyon16-test")]
    model = fit_slide_mil(train, SlideMILConfig(num_grades=0, epochs=40, lr=3e-3))
    results = predict_bags(model, test)
    polygons = {i: read_asap_xml(x) for i, x in xmls.items() if x is not None}
    localisation = lesion_hit_rate(polygons, test, [r["patch"] for r in results], 32)
    assert localisation["lesions"] == 1 and localisation["hit_rate"] == 1.0
    assert localisation["false_positives_per_slide"] < 3
    by_id = dict(zip([b.patient_id for b in test], results, strict=True))
    assert by_id["camelyon16-test_002"]["malignancy"] > by_id["camelyon16-test_001"]["malignancy"]
    # attention concentrates on the lesion of the malignant slide
    bag = next(b for b in test if b.patient_id == "camelyon16-test_002")
    attention = by_id["camelyon16-test_002"]["attention"]
    on_lesion = bag.patch_tumour > 0.5
    assert attention[on_lesion.numpy()].mean() > attention[~on_lesion.numpy()].mean()


def test_camelyon17_patient_bags_and_pn_grade(tmp_path_factory, tmp_path):
    root = layouts.camelyon17(tmp_path_factory.mktemp("camelyon17"))
    records, skipped = _scan("camelyon17", root)
    assert skipped == [] and len(records) == 10
    assert {r.domain for r in records} == {"center_0", "center_1"}
    assert {r.grade for r in records if r.patient_id == "camelyon17-patient_001"} == {"3"}
    assert sum(r.label == "malignant" for r in records) == 2
    dims, xmls = _featurise(records, tmp_path)
    bags = build_bags(records, tmp_path / "features", patch_size0=32, dimensions=dims,
                      annotations=xmls)
    assert [len(b.image_ids) for b in bags] == [5, 5]
    assert [(b.malignant, b.grade) for b in bags] == [(0.0, 0), (1.0, 3)]
    assert sorted(set(bags[1].slide_index.tolist())) == [0, 1, 2, 3, 4]
    model = fit_slide_mil(bags, SlideMILConfig(num_grades=5, epochs=30, lr=3e-3))
    graded = predict_bags(model, bags)
    assert int(graded[0]["grade"]) < int(graded[1]["grade"])
