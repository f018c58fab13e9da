"""The BACH source on a tiny fake layout written into tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from radpath.data.manifest import Manifest, Record
from radpath.data.sources import SOURCES, Skipped, SourceOptions
from radpath.data.sources.bach import BachSource
from radpath.errors import RadpathError

FILES = {"Normal": ["n001", "n002"], "Benign": ["b001"], "InSitu": ["is001"],
         "Invasive": ["iv001"]}


def _write_tiff(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((8, 8, 3), 200, dtype=np.uint8), photometric="rgb")


@pytest.fixture
def bach_root(tmp_path: Path) -> Path:
    photos = tmp_path / "ICIAR2018_BACH_Challenge" / "Photos"
    for folder, stems in FILES.items():
        for stem in stems:
            _write_tiff(photos / folder / f"{stem}.tif")
    return tmp_path


def _scan(root: Path, options: SourceOptions | None = None) -> tuple[dict[str, Record],
                                                                       list[Skipped]]:
    items = list(BachSource(root, options).scan())
    records = {i.image_id: i for i in items if isinstance(i, Record)}
    return records, [i for i in items if isinstance(i, Skipped)]


def test_registered() -> None:
    assert SOURCES.get("bach") is BachSource
    assert BachSource.modality == "histo"


def test_labels_grades_and_subtypes(bach_root: Path) -> None:
    records, skipped = _scan(bach_root)
    assert not skipped
    assert sorted(records) == ["bach-b001", "bach-is001", "bach-iv001", "bach-n001", "bach-n002"]
    expected = {"bach-n001": ("normal", "0", "Normal"), "bach-b001": ("benign", "1", "Benign"),
                "bach-is001": ("malignant", "2", "InSitu"),
                "bach-iv001": ("malignant", "3", "Invasive")}
    for image_id, (label, grade, subtype) in expected.items():
        record = records[image_id]
        assert (record.label, record.grade, record.subtype) == (label, grade, subtype)
    for record in records.values():
        assert record.patient_id == record.image_id
        assert (record.modality, record.source, record.domain) == ("histo", "bach", "bach")
        assert Path(record.path).is_absolute() and Path(record.path).is_file()
    Manifest(records.values())  # unique ids


@pytest.mark.parametrize("relative", [".", "ICIAR2018_BACH_Challenge",
                                      "ICIAR2018_BACH_Challenge/Photos"])
def test_root_may_be_any_level(bach_root: Path, relative: str) -> None:
    records, _ = _scan(bach_root / relative)
    assert len(records) == 5


def test_domain_option(bach_root: Path) -> None:
    records, _ = _scan(bach_root, SourceOptions(domain="site-b"))
    assert {r.domain for r in records.values()} == {"site-b"}


def test_ground_truth_csv_overrides_folder(bach_root: Path) -> None:
    photos = bach_root / "ICIAR2018_BACH_Challenge" / "Photos"
    (photos / "microscopy_ground_truth.csv").write_text(
        "n001.tif,Normal\nb001.tif,Invasive\nis001.tif,InSitu\n", encoding="utf-8")
    records, skipped = _scan(bach_root)
    assert not skipped
    b001 = records["bach-b001"]
    assert (b001.label, b001.grade, b001.subtype) == ("malignant", "3", "Invasive")
    assert records["bach-n002"].subtype == "Normal"  # not in the CSV: the folder decides


def test_unknown_folder_and_unknown_csv_class_are_skipped(bach_root: Path) -> None:
    photos = bach_root / "ICIAR2018_BACH_Challenge" / "Photos"
    _write_tiff(photos / "Carcinoma" / "x001.tif")
    (photos / "microscopy_ground_truth.csv").write_text("b001.tif,Weird\n", encoding="utf-8")
    records, skipped = _scan(bach_root)
    assert len(records) == 4
    reasons = {Path(s.path).name: s.reason for s in skipped}
    assert set(reasons) == {"x001.tif", "b001.tif"}
    assert "Carcinoma" in reasons["x001.tif"] and "Weird" in reasons["b001.tif"]


def test_missing_layout_raises(tmp_path: Path) -> None:
    with pytest.raises(RadpathError, match="no BACH layout"):
        list(BachSource(tmp_path).scan())
