import pytest

from radpath.data.manifest import (
    Lesion,
    Manifest,
    Record,
    parse_lesions,
    read_manifest,
    write_manifest,
)
from radpath.errors import ManifestError

HEADER = "image_id,patient_id,modality,path,label,domain\n"


def _record(image_id: str = "a", **kw) -> Record:
    base = dict(patient_id="p1", modality="mammo", path="/x.png", label="benign", domain="d")
    return Record(image_id=image_id, **{**base, **kw})


def test_round_trip_keeps_every_field(tmp_path):
    records = [_record("a", lesions=(Lesion(10.5, 20, 3, "CIRC"),), view="CC", laterality="L"),
               _record("b", modality="histo", label="", magnification="40", grade="2")]
    path = write_manifest(records, tmp_path / "m.csv")
    assert list(read_manifest(path)) == records


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    records = [_record("a", lesions=(Lesion(1, 2, 3),))]
    assert list(read_manifest(write_manifest(records, tmp_path / "m.parquet"))) == records


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("image_id,patient_id,path,label,domain\na,p,/x.png,benign,d\n")
    with pytest.raises(ManifestError, match="modality"):
        read_manifest(path)


@pytest.mark.parametrize(("row", "column", "message"), [
    ("a,p,xray,/x.png,benign,d", "modality", "mammo, histo"),
    ("a,p,mammo,/x.png,maybe,d", "label", "normal, benign, malignant"),
    ("a,,mammo,/x.png,benign,d", "patient_id", "must not be empty"),
])
def test_bad_values_name_row_and_column(tmp_path, row, column, message):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "ok,p,mammo,/y.png,normal,d\n" + row + "\n")
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    assert info.value.row == 2
    assert info.value.column == column
    assert message in str(info.value) and "row 2" in str(info.value)


@pytest.mark.parametrize("text", ["not json", '{"x": 1}', '[{"x": 1, "y": 2}]',
                                  '[{"x": "a", "y": 2, "r": 3}]', '[{"x": -1, "y": 2, "r": 3}]'])
def test_malformed_lesions_are_refused(text):
    with pytest.raises(ManifestError, match="lesions"):
        parse_lesions(text, row=3)


def test_duplicate_image_ids_are_refused():
    with pytest.raises(ManifestError, match="duplicate image_id 'a'"):
        Manifest([_record("a"), _record("a")])


def test_relative_paths_resolve_against_the_manifest(tmp_path):
    path = tmp_path / "sub" / "m.csv"
    write_manifest([_record("a", path="images/a.png")], path)
    manifest = read_manifest(path)
    assert manifest.resolve_path(manifest[0]) == tmp_path / "sub" / "images" / "a.png"


def test_write_is_atomic_on_failure(tmp_path):
    path = write_manifest([_record("a")], tmp_path / "m.csv")
    before = path.read_text()

    class Exploding(list):
        def __iter__(self):
            yield _record("b")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_manifest(Exploding(), path)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.csv"]
