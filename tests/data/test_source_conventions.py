"""Each dataset source's conventions on synthetic index files and names (no real data).

The real-data tests check the same rules on ../shared/data; these run on a fresh clone:
MIAS's bottom-left origin (row = 1024 - Y), its patient and laterality rule, BreakHis's
patient, magnification and subtype fields, UCSB's block-and-date batches.
"""

from __future__ import annotations

from pathlib import Path

from radpath.data.manifest import Record
from radpath.data.sources import SOURCES, Skipped, SourceOptions

PGM = b"P5\n2 2\n255\n\x00\x01\x02\x03"


def _records(name: str, root: Path, **options) -> dict[str, Record]:
    items = list(SOURCES.get(name)(root, SourceOptions(**options)).scan())
    assert not [i for i in items if isinstance(i, Skipped)]
    return {i.image_id: i for i in items}


def _mias(root: Path, rows: str, films: list[str]) -> dict[str, Record]:
    (root / "Info.txt").write_text("Free text header of the MIAS index\n" + rows)
    for film in films:
        (root / f"{film}.pgm").write_bytes(PGM)
    return _records("mias", root)


def test_mias_coordinates_patients_and_laterality(tmp_path):
    records = _mias(tmp_path, "mdb011 F CIRC M 100 1000 10\n"
                              "mdb011 F SPIC B 300 24 5\n"
                              "mdb012 D NORM\n"
                              "mdb013 G CALC B\n",
                    ["mdb011", "mdb012", "mdb013"])
    first, second = records["mdb011"].lesions
    # Origin bottom-left in MIAS, top-left in radpath: row = 1024 - Y, column = X.
    assert (first.x, first.y, first.r, first.kind) == (100, 24, 10, "CIRC")
    assert (second.x, second.y, second.r, second.kind) == (300, 1000, 5, "SPIC")
    # mdbN belongs to patient (N + 1) // 2; odd N is a right breast, even N a left one.
    assert [records[f].patient_id for f in ("mdb011", "mdb012", "mdb013")] == [
        "mias-006", "mias-006", "mias-007"]
    assert [records[f].laterality for f in ("mdb011", "mdb012", "mdb013")] == ["R", "L", "R"]


def test_mias_labels_domains_and_rows_without_coordinates(tmp_path):
    records = _mias(tmp_path, "mdb001 F CIRC B 1 2 3\nmdb001 F SPIC M 4 5 6\n"
                              "mdb002 D NORM\nmdb003 G CALC B\n",
                    ["mdb001", "mdb002", "mdb003"])
    # The worst severity of a film's rows is its label.
    assert [records[f].label for f in ("mdb001", "mdb002", "mdb003")] == [
        "malignant", "normal", "benign"]
    assert [records[f].domain for f in ("mdb001", "mdb002", "mdb003")] == [
        "fatty", "dense-glandular", "fatty-glandular"]
    assert records["mdb001"].subtype == "CIRC+SPIC"
    assert records["mdb003"].lesions == () and records["mdb003"].subtype == "CALC"
    assert {r.view for r in records.values()} == {"MLO"}


def _touch(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_breakhis_patient_magnification_subtype_and_label(tmp_path):
    _touch(tmp_path, ["benign/SOB_B_TA-14-3411F-100-002.png",
                      "malignant/deep/SOB_M_LC-15-30391AB-200-011.png",
                      "SOB_M_LC-15-30391CD-40-003.png"])
    records = _records("breakhis", tmp_path)
    tubular = records["SOB_B_TA-14-3411F-100-002"]
    assert (tubular.patient_id, tubular.magnification, tubular.domain, tubular.label,
            tubular.subtype) == ("breakhis-3411", "100", "100x", "benign", "tubular_adenoma")
    # Two slides (AB, CD) of one patient, at two magnifications: one patient, two domains.
    lobular = [records["SOB_M_LC-15-30391AB-200-011"], records["SOB_M_LC-15-30391CD-40-003"]]
    assert {r.patient_id for r in lobular} == {"breakhis-30391"}
    assert [r.domain for r in lobular] == ["200x", "40x"]
    assert {(r.label, r.subtype) for r in lobular} == {("malignant", "lobular_carcinoma")}


def test_breakhis_domain_option_replaces_the_magnification(tmp_path):
    _touch(tmp_path, ["SOB_B_F-14-9133-400-001.png"])
    (record,) = _records("breakhis", tmp_path, domain="site-b").values()
    assert (record.domain, record.magnification) == ("site-b", "400")


def test_ucsb_batches_are_block_and_scan_date_and_each_image_is_a_case(tmp_path):
    _touch(tmp_path, ["ytma49_042003_benign2_ccd.tif", "ytma49_042003_malignant1_ccd.tif",
                      "ytma49_111303_Malignant3_ccd.TIF", "ytma10_010704_benign1_ccd.tif"])
    records = _records("ucsb", tmp_path)
    by_name = {r.image_id.removeprefix("ucsb-"): r for r in records.values()}
    assert {name: r.domain for name, r in by_name.items()} == {
        "ytma49_042003_benign2_ccd": "ytma49_042003",
        "ytma49_042003_malignant1_ccd": "ytma49_042003",
        "ytma49_111303_Malignant3_ccd": "ytma49_111303",
        "ytma10_010704_benign1_ccd": "ytma10_010704"}
    assert by_name["ytma49_111303_Malignant3_ccd"].label == "malignant"
    assert all(r.patient_id == r.image_id for r in records.values())
