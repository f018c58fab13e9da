import csv

import numpy as np
import pytest
from PIL import Image

from radpath.data.ingest import ingest
from radpath.data.manifest import read_manifest
from radpath.errors import RadpathError


def _png(path, array):
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def messy_cohort(tmp_path):
    """A user's manifest where most rows are wrong in a different way."""
    rng = np.random.default_rng(0)
    good = _png(tmp_path / "good.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    _png(tmp_path / "good_rgb.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:100])
    (tmp_path / "notes.png").write_text("this is not an image")
    _png(tmp_path / "constant.png", np.full((64, 64), 7, np.uint8))
    rows = [
        ("ok", "p1", "mammo", "good.png", "benign", '[{"x": 10, "y": 10, "r": 3}]'),
        ("ok-rgb", "p2", "histo", "good_rgb.png", "malignant", ""),
        ("trunc", "p3", "mammo", "truncated.png", "benign", ""),
        ("text", "p4", "mammo", "notes.png", "benign", ""),
        ("flat", "p5", "mammo", "constant.png", "normal", ""),
        ("gone", "p6", "mammo", "missing.png", "normal", ""),
        ("odd-label", "p7", "mammo", "good.png", "probably", ""),
        ("colour-mammo", "p8", "mammo", "good_rgb.png", "normal", ""),
        ("grey-histo", "p9", "histo", "good.png", "benign", ""),
        ("far-lesion", "p10", "mammo", "good.png", "benign", '[{"x": 500, "y": 10, "r": 3}]'),
    ]
    manifest = tmp_path / "in.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "patient_id", "modality", "path", "label", "lesions",
                         "domain"])
        writer.writerows([*row, "site"] for row in rows)
    return manifest


def test_bad_files_are_skipped_and_reported(messy_cohort, tmp_path):
    report = ingest("csv", messy_cohort, tmp_path / "out" / "m.csv", workers=1, progress=False)
    assert [r.image_id for r in read_manifest(report.manifest_path)] == ["ok", "ok-rgb"]
    with report.skipped_path.open() as handle:
        skipped = [(row["path"].split("/")[-1], row["reason"]) for row in csv.DictReader(handle)]
    assert report.skipped_path == tmp_path / "out" / "skipped.csv"
    assert len(skipped) == 8 == len(report.skipped)
    reasons = dict(skipped)
    assert "constant" in reasons["constant.png"]
    assert "truncated" in reasons["truncated.png"]
    assert "not found" in reasons["missing.png"] or "no such" in reasons["missing.png"].lower()
    assert ("good_rgb.png", "colour image where a greyscale mammogram was expected") in skipped
    assert ("good.png", "greyscale image where an RGB H&E image was expected") in skipped
    assert ("good.png", "lesion centre (500, 10) lies outside the 64x64 image") in skipped
    assert any("row 7" in why and "label" in why for _, why in skipped)
    assert "notes.png" in reasons


def test_parallel_ingest_matches_serial(messy_cohort, tmp_path):
    serial = ingest("csv", messy_cohort, tmp_path / "a" / "m.csv", workers=1, progress=False)
    parallel = ingest("csv", messy_cohort, tmp_path / "b" / "m.csv", workers=2, progress=False)
    assert serial.records == parallel.records
    assert [s.reason for s in serial.skipped] == [s.reason for s in parallel.skipped]


def test_nothing_ingested_is_an_error_but_still_reports(tmp_path):
    (tmp_path / "notes.png").write_text("no image here")
    (tmp_path / "m.csv").write_text("image_id,patient_id,modality,path,label,domain\n"
                                    "a,p,mammo,notes.png,benign,d\n")
    with pytest.raises(RadpathError, match="nothing could be ingested"):
        ingest("csv", tmp_path / "m.csv", tmp_path / "out" / "m.csv", workers=1, progress=False)
    assert (tmp_path / "out" / "skipped.csv").is_file()
    assert not (tmp_path / "out" / "m.csv").exists()


@pytest.mark.realdata
def test_ingest_real_ucsb_in_parallel(ucsb_dir, tmp_path):
    report = ingest("ucsb", ucsb_dir, tmp_path / "ucsb.csv", workers=2, progress=False)
    assert len(report.records) == 40 and not report.skipped
