from collections import Counter

import pytest

from radpath.data.manifest import Record
from radpath.data.sources import SOURCES, Skipped, SourceOptions
from radpath.errors import RadpathError


def _scan(name, root, **options):
    items = list(SOURCES.get(name)(root, SourceOptions(**options)).scan())
    records = [i for i in items if isinstance(i, Record)]
    return records, [i for i in items if isinstance(i, Skipped)]


def test_registry_holds_every_builtin_source():
    for name in ("mias", "cbis-ddsm", "breakhis", "ucsb", "folder", "csv", "inbreast", "bach"):
        assert name in SOURCES


def test_registry_refuses_duplicates_and_names_unknowns():
    with pytest.raises(RadpathError, match="already registered"):
        SOURCES.register("mias")(object)
    with pytest.raises(RadpathError, match=r"known: .*mias"):
        SOURCES.get("nope")


@pytest.mark.realdata
def test_mias_gives_194_films_of_97_patients(mias_dir):
    records, skipped = _scan("mias", mias_dir)
    assert (len(records), len({r.patient_id for r in records}), skipped) == (194, 97, [])
    rows_with_coordinates = [line for line in (mias_dir / "Info.txt").read_text().splitlines()
                             if line.startswith("mdb") and len(line.split()) == 7]
    assert sum(len(r.lesions) for r in records) == len(rows_with_coordinates) == 75
    assert Counter(r.domain for r in records).keys() == {"fatty", "fatty-glandular",
                                                          "dense-glandular"}


@pytest.mark.realdata
def test_mias_lesion_converted_to_top_left(mias_dir):
    records = {r.image_id: r for r in _scan("mias", mias_dir)[0]}
    # Info.txt: "mdb001 G CIRC B 535 425 197", origin bottom-left of a 1024-px film.
    (lesion,) = records["mdb001"].lesions
    assert (lesion.x, lesion.y, lesion.r, lesion.kind) == (535, 1024 - 425, 197, "CIRC")
    # Two lesions on one film: "mdb005 F CIRC B 477 133 30" and "... 500 168 26".
    assert [(les.x, les.y) for les in records["mdb005"].lesions] == [(477, 891), (500, 856)]
    assert records["mdb001"].label == "benign" and records["mdb003"].label == "normal"


@pytest.mark.realdata
def test_mias_abnormal_rows_without_coordinates(mias_dir):
    records = {r.image_id: r for r in _scan("mias", mias_dir)[0]}
    assert records["mdb245"].label == "malignant" and records["mdb245"].lesions == ()
    assert records["mdb245"].subtype == "CALC"


@pytest.mark.realdata
def test_mias_left_and_right_films_share_a_patient(mias_dir):
    records = {r.image_id: r for r in _scan("mias", mias_dir)[0]}
    assert records["mdb001"].patient_id == records["mdb002"].patient_id
    assert (records["mdb001"].laterality, records["mdb002"].laterality) == ("R", "L")
    assert records["mdb002"].patient_id != records["mdb003"].patient_id


def test_mias_reads_pgm_and_reports_unlisted_films(tmp_path):
    (tmp_path / "Info.txt").write_text("header text\nmdb001 G CIRC B 535 425 197\n"
                                       "mdb002 G NORM\nmdb004 F NORM\n")
    for name in ("mdb001.pgm", "mdb002.pgm", "mdb003.pgm"):
        (tmp_path / name).write_bytes(b"P5\n2 2\n255\n\x00\x01\x02\x03")
    records, skipped = _scan("mias", tmp_path)
    assert [r.image_id for r in records] == ["mdb001", "mdb002"]
    assert {s.reason for s in skipped} == {"film not listed in Info.txt",
                                           "listed in Info.txt but no image file"}


def test_mias_malformed_info_row_names_the_line(tmp_path):
    (tmp_path / "Info.txt").write_text("mdb001 G WHAT B 1 2 3\n")
    with pytest.raises(ValueError, match="line 1"):
        _scan("mias", tmp_path)


@pytest.mark.realdata
def test_breakhis_patients_magnifications_and_subtypes(breakhis_dir):
    records, skipped = _scan("breakhis", breakhis_dir)
    by_id = {r.image_id: r for r in records}
    assert len(records) == 14 and not skipped
    # Slides 22549AB and 22549CD belong to one patient.
    assert (by_id["SOB_B_A-14-22549AB-40-001"].patient_id
            == by_id["SOB_B_A-14-22549CD-400-006"].patient_id == "breakhis-22549")
    assert by_id["SOB_B_A-14-22549CD-400-006"].magnification == "400"
    assert by_id["SOB_B_A-14-22549CD-400-006"].domain == "400x"
    assert by_id["SOB_M_DC-14-2523-40-010"].label == "malignant"
    assert by_id["SOB_M_DC-14-2523-40-010"].subtype == "ductal_carcinoma"


def test_breakhis_skips_foreign_names(tmp_path):
    (tmp_path / "holiday.png").write_bytes(b"x")
    (tmp_path / "SOB_B_ZZ-14-1-40-001.png").write_bytes(b"x")
    records, skipped = _scan("breakhis", tmp_path)
    assert not records and len(skipped) == 2
    assert any("unknown BreakHis tumour type" in s.reason for s in skipped)


@pytest.mark.realdata
def test_ucsb_domains_are_block_and_scan_date(ucsb_dir):
    records, skipped = _scan("ucsb", ucsb_dir)
    assert len(records) == 40 and not skipped
    domains = Counter(r.domain for r in records)
    assert domains["ytma10_010704"] == 6 and len(domains) == 7
    assert {r.label for r in records} == {"benign", "malignant"}
    assert len({r.patient_id for r in records}) == 40


def test_folder_source_labels_from_folders(tmp_path):
    for relative in ("benign/a.png", "malignant/p7/b.png", "malignant/p7/c.png", "junk/d.png",
                     "e.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    records, skipped = _scan("folder", tmp_path, modality="histo")
    assert {r.image_id: (r.label, r.patient_id) for r in records} == {
        "benign/a": ("benign", "benign/a"), "malignant/p7/b": ("malignant", "p7"),
        "malignant/p7/c": ("malignant", "p7")}
    assert len(skipped) == 2


def test_folder_source_needs_a_modality(tmp_path):
    with pytest.raises(RadpathError, match="--modality"):
        _scan("folder", tmp_path)


def test_csv_source_skips_bad_rows_naming_them(tmp_path):
    (tmp_path / "m.csv").write_text(
        "image_id,patient_id,modality,path,label,domain\n"
        "a,p1,mammo,img/a.png,benign,site\n"
        "b,p2,mammo,img/b.png,unsure,site\n")
    records, skipped = _scan("csv", tmp_path / "m.csv")
    assert [r.image_id for r in records] == ["a"]
    assert records[0].path == str((tmp_path / "img" / "a.png").resolve())
    assert "row 2" in skipped[0].reason and "label" in skipped[0].reason


def test_csv_source_refuses_a_header_without_required_columns(tmp_path):
    (tmp_path / "m.csv").write_text("image_id,path\na,a.png\n")
    with pytest.raises(RadpathError, match="patient_id"):
        _scan("csv", tmp_path / "m.csv")
