"""The DICOM dataset sources: CBIS-DDSM (real files and synthetic) and INbreast (synthetic)."""

from __future__ import annotations

import plistlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from radpath.data.manifest import Lesion, Manifest, Record
from radpath.data.sources import SOURCES, Skipped, SourceOptions
from radpath.data.sources.cbis_ddsm import NOT_FULL, CbisDdsmSource, LabelTable
from radpath.data.sources.inbreast import InbreastSource, birads_label
from radpath.errors import ManifestError


def write_dicom(path: Path, **tags: object) -> Path:
    """A tiny 16-bit MONOCHROME2 DICOM with the given header tags."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "MG"
    ds.set_pixel_data(np.arange(16, dtype=np.uint16).reshape(4, 4), "MONOCHROME2", 16)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def split(items: list[Record | Skipped]) -> tuple[list[Record], list[Skipped]]:
    return ([i for i in items if isinstance(i, Record)],
            [i for i in items if isinstance(i, Skipped)])


def test_sources_are_registered() -> None:
    assert SOURCES.get("cbis-ddsm") is CbisDdsmSource
    assert SOURCES.get("inbreast") is InbreastSource


# --------------------------------------------------------------------------- CBIS-DDSM, real


@pytest.mark.realdata
def test_cbis_real_cases_labelled_by_folder(cbis_cases_dir: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nsfm-benign-0,benign\nsfm-malign-0,malignant\n")
    source = CbisDdsmSource(cbis_cases_dir, SourceOptions(labels=labels))
    records, skipped = split(list(source.scan()))
    assert skipped == []
    manifest = Manifest(records)  # validates unique image ids
    assert len(manifest) == 8
    assert sorted(manifest.patients()) == ["P_00173", "P_00820"]
    expected = {"P_00173": "benign", "P_00820": "malignant"}
    for patient, label in expected.items():
        mine = manifest.filter(patient_id=patient)
        assert {r.label for r in mine} == {label}
        assert {(r.laterality, r.view) for r in mine} == {
            ("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")}
    first = manifest.filter(image_id="Mass-Test_P_00173_LEFT_CC")[0]
    assert (first.modality, first.domain, first.subtype, first.source) == (
        "mammo", "cbis-ddsm", "mass", "cbis-ddsm")
    assert Path(first.path).is_absolute() and Path(first.path).is_file()


@pytest.mark.realdata
def test_cbis_real_cases_without_labels_are_unknown(cbis_cases_dir: Path) -> None:
    records, _ = split(list(CbisDdsmSource(cbis_cases_dir).scan()))
    assert {r.label for r in records} == {""}


# --------------------------------------------------------------------------- CBIS-DDSM, synthetic


@pytest.fixture
def cbis_layout(tmp_path: Path) -> Path:
    root = tmp_path / "CBIS-DDSM"
    full = {"SeriesDescription": "full mammogram images"}
    write_dicom(root / "a" / "1.dcm", PatientID="Mass-Training_P_00001_LEFT_CC", **full)
    write_dicom(root / "a" / "2.dcm", PatientID="Mass-Training_P_00001_LEFT_MLO", **full)
    write_dicom(root / "b" / "1.dcm", PatientID="Calc-Test_P_00002_RIGHT_CC", **full)
    # Laterality and view only in the tags, as some exports have them.
    write_dicom(root / "c" / "1.dcm", PatientID="Calc-Test_P_00003", ImageLaterality="L",
                ViewPosition="MLO", **full)
    write_dicom(root / "roi" / "1.dcm", PatientID="Mass-Training_P_00001_LEFT_CC_1",
                SeriesDescription="ROI mask images")
    write_dicom(root / "crop" / "1.dcm", PatientID="Mass-Training_P_00001_LEFT_CC_1")
    write_dicom(root / "other" / "1.dcm", PatientID="HOSPITAL-4711", PatientName="Doe^Jane")
    (root / "broken.dcm").write_text("not a dicom file\n")
    return root


def test_cbis_descriptions_give_the_worst_pathology(cbis_layout: Path, tmp_path: Path) -> None:
    mass = tmp_path / "mass_case_description_train_set.csv"
    mass.write_text(
        "patient_id,breast_density,left or right breast,image view,abnormality id,"
        "abnormality type,pathology\n"
        "P_00001,2,LEFT,CC,1,mass,BENIGN\n"
        "P_00001,2,LEFT,CC,2,mass,MALIGNANT\n"
        "P_00001,2,LEFT,MLO,1,mass,BENIGN_WITHOUT_CALLBACK\n")
    calc = tmp_path / "calc_case_description_test_set.csv"
    calc.write_text("patient_id,breast density,left or right breast,image view,abnormality id,"
                    "abnormality type,pathology\nP_00003,3,LEFT,MLO,1,calcification,MALIGNANT\n")
    options = SourceOptions(descriptions=(mass, calc), domain="film")
    records, skipped = split(list(CbisDdsmSource(cbis_layout, options).scan()))
    labels = {r.image_id: r.label for r in records}
    assert labels == {
        "Mass-Training_P_00001_LEFT_CC": "malignant",
        "Mass-Training_P_00001_LEFT_MLO": "benign",
        "Calc-Test_P_00002_RIGHT_CC": "",
        "Calc-Test_P_00003_LEFT_MLO": "malignant",
    }
    fallback = next(r for r in records if r.patient_id == "P_00003")
    assert (fallback.laterality, fallback.view, fallback.subtype) == ("L", "MLO", "calc")
    assert {r.domain for r in records} == {"film"}
    reasons = {Path(s.path).relative_to(cbis_layout).as_posix(): s.reason for s in skipped}
    assert reasons["roi/1.dcm"] == NOT_FULL and reasons["crop/1.dcm"] == NOT_FULL
    assert "not a DICOM" in reasons["broken.dcm"]
    assert "CBIS-DDSM pattern" in reasons["other/1.dcm"]
    assert "4711" not in reasons["other/1.dcm"]  # the PatientID is never echoed


def test_cbis_description_with_unknown_pathology(cbis_layout: Path, tmp_path: Path) -> None:
    bad = tmp_path / "d.csv"
    bad.write_text("patient_id,left or right breast,image view,pathology\n"
                   "P_00001,LEFT,CC,MAYBE\n")
    with pytest.raises(ManifestError, match=r"d\.csv, row 1, column 'pathology'"):
        list(CbisDdsmSource(cbis_layout, SourceOptions(descriptions=(bad,))).scan())


def test_cbis_duplicate_image_gets_a_suffix(tmp_path: Path) -> None:
    for folder in ("x", "y"):
        write_dicom(tmp_path / folder / "1.dcm", PatientID="Mass-Test_P_00009_LEFT_CC")
    records, _ = split(list(CbisDdsmSource(tmp_path).scan()))
    assert [r.image_id for r in records] == ["Mass-Test_P_00009_LEFT_CC",
                                             "Mass-Test_P_00009_LEFT_CC-2"]


def test_label_table_precedence(tmp_path: Path) -> None:
    table_path = tmp_path / "labels.csv"
    table_path.write_text("image_id,path,patient_id,label\n"
                          "img-1,,,malignant\n"
                          ",data/benign,,benign\n"
                          ",data/benign/odd.dcm,,normal\n"
                          ",,P_1,benign\n")
    table = LabelTable.read(table_path)
    folder = Path("/x/data/benign")
    assert table.lookup(image_id="img-1", patient_id="P_1", path=folder / "a.dcm") == "malignant"
    assert table.lookup(image_id="img-2", patient_id="", path=folder / "a.dcm") == "benign"
    assert table.lookup(image_id="img-2", patient_id="", path=folder / "odd.dcm") == "normal"
    assert table.lookup(image_id="img-2", patient_id="P_1", path=Path("/x/y.dcm")) == "benign"
    assert table.lookup(image_id="img-2", patient_id="P_2", path=Path("/x/y.dcm")) == ""


def test_label_table_errors_name_file_row_column(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("path,label\na,benign\nb,cancer\n")
    with pytest.raises(ManifestError, match=r"labels\.csv, row 2, column 'label'"):
        LabelTable.read(bad)
    bad.write_text("file,label\na,benign\n")
    with pytest.raises(ManifestError, match="needs a 'path'"):
        LabelTable.read(bad)


# --------------------------------------------------------------------------- INbreast


@pytest.mark.parametrize(("birads", "label"), [
    ("1", "normal"), ("2", "benign"), ("3", "benign"), ("4a", "malignant"),
    ("4c", "malignant"), ("5", "malignant"), ("6", "malignant"), ("0", ""), ("", ""),
])
def test_birads_mapping(birads: str, label: str) -> None:
    assert birads_label(birads) == label


@pytest.fixture
def inbreast_layout(tmp_path: Path) -> Path:
    root = tmp_path / "INbreast"
    dicoms = root / "AllDICOMs"
    write_dicom(dicoms / "20586908_6c613a14b80a8591_MG_R_CC_ANON.dcm")
    write_dicom(dicoms / "20586934_6c613a14b80a8591_MG_L_MLO_ANON.dcm")
    write_dicom(dicoms / "22614097_0a1b2c3d4e5f6789_MG_L_CC_ANON.dcm")
    write_dicom(dicoms / "stray_file.dcm")
    (root / "INbreast.csv").write_text(
        "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
        "removed;removed;R;CC;201001;20586908;2;1\n"
        "removed;removed;L;MLO;201001;20586934.0;2;4b\n"
        "removed;removed;L;CC;200903;22614097;4;2\n")
    roi = {"Name": "Mass", "Point_px": ["(10.0, 20.0)", "(14.0, 20.0)", "(12, 23.5)"]}
    calc = {"Name": "Calcification", "Point_px": ["(100.5, 50.25)"]}
    (root / "AllXML").mkdir()
    with (root / "AllXML" / "20586934.xml").open("wb") as handle:
        plistlib.dump({"Images": [{"ImageIndex": 0, "ROIs": [roi, calc]}]}, handle)
    (root / "AllXML" / "22614097.xml").write_text("<not a plist")
    return root


def test_inbreast_layout(inbreast_layout: Path) -> None:
    records, skipped = split(list(InbreastSource(inbreast_layout).scan()))
    manifest = Manifest(records)
    assert len(manifest) == 3
    assert manifest.patients() == ["6c613a14b80a8591", "0a1b2c3d4e5f6789"]
    by_id = {r.image_id: r for r in manifest}
    assert {i: r.label for i, r in by_id.items()} == {
        "20586908": "normal", "20586934": "malignant", "22614097": "benign"}
    first = by_id["20586908"]
    assert (first.laterality, first.view, first.subtype, first.domain, first.modality) == (
        "R", "CC", "ACR2", "inbreast", "mammo")
    mass, calc = by_id["20586934"].lesions
    assert (mass.x, mass.y, mass.kind) == (12.0, 21.17, "mass")
    assert mass.r == pytest.approx(2.33, abs=0.01)
    assert calc == Lesion(100.5, 50.25, 0.0, "calcification")
    assert by_id["22614097"].lesions == ()  # unparsable XML: no lesions, no failure
    assert [Path(s.path).name for s in skipped] == ["stray_file.dcm"]


def test_inbreast_without_table_has_unknown_labels(inbreast_layout: Path) -> None:
    (inbreast_layout / "INbreast.csv").unlink()
    options = SourceOptions(domain="portugal")
    records, _ = split(list(InbreastSource(inbreast_layout, options).scan()))
    assert {r.label for r in records} == {""}
    assert {r.domain for r in records} == {"portugal"}


def test_inbreast_table_missing_column(inbreast_layout: Path) -> None:
    (inbreast_layout / "INbreast.csv").write_text("File Name;ACR\n20586908;2\n")
    with pytest.raises(ManifestError, match="column 'bi-rads'"):
        list(InbreastSource(inbreast_layout).scan())
