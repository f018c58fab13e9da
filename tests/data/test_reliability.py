"""Bad input at ingest: no crash, no silent drop, nothing admitted that preprocessing refuses.

Each test names the point of the reliability audit (issue 44) it guards.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radpath.data.ingest import ingest
from radpath.data.io import read_image
from radpath.data.manifest import read_manifest
from radpath.data.sources import SourceOptions
from radpath.errors import ImageReadError, RadpathError
from tests.fuzz_corpus import (
    dicom_bytes,
    grey_dicom,
    histo_pixels,
    mammo_pixels,
    pillow_bytes,
    ppm_bytes,
    rle_panic_dicom,
)

GREY8 = np.rint(mammo_pixels(64) * 255).astype(np.uint8)


def _folder_ingest(root: Path, modality: str, workers: int = 1):
    return ingest("folder", root, root.parent / "out" / "m.csv", workers=workers,
                  options=SourceOptions(modality=modality), progress=False)


def _skipped(report) -> dict[str, str]:
    with report.skipped_path.open() as handle:
        return {Path(row["path"]).name: row["reason"] for row in csv.DictReader(handle)}


# ---------------------------------------------------------------- 1. a decoder panic


def test_rust_decoder_panic_is_a_read_error(tmp_path):
    path = tmp_path / "panic.dcm"
    path.write_bytes(rle_panic_dicom())
    with pytest.raises(ImageReadError, match="decoder failed"):
        read_image(path)


def test_panicking_file_is_skipped_by_a_parallel_ingest(tmp_path):
    root = tmp_path / "cohort"
    (root / "benign").mkdir(parents=True)
    for index in range(3):
        (root / "benign" / f"good{index}.png").write_bytes(pillow_bytes(GREY8, "PNG"))
    (root / "benign" / "panic.dcm").write_bytes(rle_panic_dicom())
    report = _folder_ingest(root, "mammo", workers=2)
    assert len(report.records) == 3
    assert "decoder failed" in _skipped(report)["panic.dcm"]


# ---------------------------------------------------------------- 2. silent drops


def test_every_file_of_a_folder_is_a_record_or_a_skipped_row(tmp_path):
    root = tmp_path / "cohort"
    folder = root / "malignant"
    folder.mkdir(parents=True)
    dicom = dicom_bytes(grey_dicom(mammo_pixels(64)))
    (folder / "IM000001").write_bytes(dicom)  # the usual name on CDs and PACS exports
    (folder / "SCAN.IMA").write_bytes(dicom)
    (folder / "colour.ppm").write_bytes(ppm_bytes(np.dstack([GREY8] * 3)))
    (folder / "packed.dcm.gz").write_bytes(gzip.compress(dicom))
    (folder / "notes.txt").write_text("reading notes")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    report = _folder_ingest(root, "mammo")
    admitted = sorted(Path(r.path).name for r in report.records)
    assert admitted == ["IM000001", "SCAN.IMA", "colour.ppm"]
    skipped = _skipped(report)
    assert set(skipped) == {"packed.dcm.gz", "notes.txt", ".DS_Store"}
    assert "gunzip" in skipped["packed.dcm.gz"]
    assert "not an image format" in skipped["notes.txt"]
    assert "hidden file" in skipped[".DS_Store"]


# ---------------------------------------------------------------- 3. admitted but unusable


@pytest.mark.parametrize(("tags", "reason"), [
    ({"RescaleSlope": "NaN", "RescaleIntercept": "0"}, "non-finite"),
    ({"RescaleSlope": "1e308", "RescaleIntercept": "1e308"}, "non-finite"),
])
def test_non_finite_rescale_is_refused(tmp_path, tags, reason):
    path = tmp_path / "a.dcm"
    path.write_bytes(dicom_bytes(grey_dicom(mammo_pixels(64), **tags)))
    with pytest.raises(ImageReadError, match=reason):
        read_image(path)


def test_non_finite_window_is_ignored_not_turned_into_nan(tmp_path):
    path = tmp_path / "a.dcm"
    path.write_bytes(dicom_bytes(grey_dicom(mammo_pixels(64), WindowCenter="NaN",
                                            WindowWidth="NaN")))
    image = read_image(path)
    assert np.isfinite(image.pixels).all()
    assert image.meta["voi"] == "none (non-finite window ignored)"
    assert image.pixels.max() > image.pixels.min()


@pytest.mark.parametrize("shape", [(500, 1), (1, 500), (8, 8)])
def test_images_preprocessing_refuses_are_skipped_at_ingest(tmp_path, shape):
    root = tmp_path / "cohort"
    (root / "normal").mkdir(parents=True)
    (root / "normal" / "good.png").write_bytes(pillow_bytes(GREY8, "PNG"))
    strip = np.resize(GREY8, shape)
    (root / "normal" / "strip.png").write_bytes(pillow_bytes(strip, "PNG"))
    report = _folder_ingest(root, "mammo")
    assert [Path(r.path).name for r in report.records] == ["good.png"]
    assert "too small" in _skipped(report)["strip.png"]


# ---------------------------------------------------------------- 5. codecs of real archives

# One file of pydicom's own test set per transfer syntax, with its size.
PYDICOM_FILES = [
    ("JPEG2000.dcm", "JPEG 2000 Image Compression", (1024, 256)),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 Image Compression (Lossless Only)", (64, 64)),
    ("GDCMJ2K_TextGBR.dcm", "JPEG 2000 Image Compression (Lossless Only)", (400, 400)),
    ("JPGExtended.dcm", "JPEG Extended (Process 2 and 4)", (1024, 256)),
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEG Baseline (Process 1)", (100, 100)),
    ("SC_rgb_jpeg_gdcm.dcm", "JPEG Lossless, Non-Hierarchical, First-Order Prediction "
                             "(Process 14 [Selection Value 1])", (100, 100)),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS Lossless Image Compression", (64, 64)),
    ("JPEGLSNearLossless_16.dcm", "JPEG-LS Lossy (Near-Lossless) Image Compression",
     (50, 10)),
    ("MR_small_RLE.dcm", "RLE Lossless", (64, 64)),
    ("image_dfl.dcm", "Deflated Explicit VR Little Endian", (512, 512)),
    ("MR_small_bigendian.dcm", "Explicit VR Big Endian", (64, 64)),
    ("MR_small_implicit.dcm", "Implicit VR Little Endian", (64, 64)),
]


@pytest.mark.parametrize(("name", "syntax", "size"), PYDICOM_FILES)
def test_each_transfer_syntax_decodes_pydicoms_own_file(name, syntax, size):
    image = read_image(get_testdata_file(name))
    assert image.meta["transfer_syntax"] == syntax
    assert image.size == size
    assert np.isfinite(image.pixels.astype(np.float32)).all()
    assert image.pixels.std() > 0


def test_jpeg_2000_lossless_decodes_to_the_uncompressed_pixels():
    plain = read_image(get_testdata_file("MR_small.dcm"))
    lossless = read_image(get_testdata_file("MR_small_jp2klossless.dcm"))
    np.testing.assert_allclose(lossless.pixels, plain.pixels, atol=1e-6)


def test_broken_12_bit_jpeg_of_pydicom_is_a_clear_error():
    # pydicom's README: JPEG-lossy.dcm has invalid SOS parameters (no decoder reads it);
    # JPGExtended.dcm is its fixed version, decoded above.
    with pytest.raises(ImageReadError, match="cannot decode the pixel data"):
        read_image(get_testdata_file("JPEG-lossy.dcm"))


def test_every_pydicom_test_file_reads_or_fails_cleanly():
    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    outcomes = {"read": 0, "refused": 0}
    for path in sorted(folder.glob("*.dcm")):
        try:
            read_image(path)
            outcomes["read"] += 1
        except ImageReadError as exc:
            assert exc.reason and path.name in str(exc)
            outcomes["refused"] += 1
    assert outcomes["read"] >= 55, outcomes


# ---------------------------------------------------------------- 9. orphans after a kill

KILLED_PARENT = """
import sys, time
from radpath.parallel import parallel_map

def slow(item):
    time.sleep(60)
    return item

if __name__ == "__main__":
    parallel_map(slow, list(range(8)), workers=3, progress=False)
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="counts processes through /proc")
def test_pool_workers_exit_when_the_run_is_sigkilled(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "run.py"
    script.write_text(KILLED_PARENT)
    run = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).parents[2])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(run.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(workers) >= 3, "the pool never started"
        time.sleep(1.0)  # the workers are now blocked in their tasks
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [w for w in workers if _alive(w)] == []
    finally:
        # The workers found: once their parent is gone they are no longer its children.
        for pid in {*workers, *_children(run.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.kill()


# ---------------------------------------------------------------- 10. modality sanity


def test_grey_picture_saved_as_rgb_is_refused_as_histology(tmp_path):
    root = tmp_path / "cohort"
    (root / "benign").mkdir(parents=True)
    (root / "benign" / "he.png").write_bytes(pillow_bytes(histo_pixels(64), "PNG"))
    (root / "benign" / "grey-rgb.png").write_bytes(pillow_bytes(np.dstack([GREY8] * 3), "PNG"))
    (root / "benign" / "grey-rgb.jpg").write_bytes(
        pillow_bytes(np.dstack([GREY8] * 3), "JPEG", quality=85))
    report = _folder_ingest(root, "histo")
    assert [Path(r.path).name for r in report.records] == ["he.png"]
    skipped = _skipped(report)
    assert "without colour" in skipped["grey-rgb.png"]
    assert "without colour" in skipped["grey-rgb.jpg"]


def test_colour_photo_is_refused_and_grey_jpeg_in_rgb_accepted_as_mammogram(tmp_path):
    root = tmp_path / "cohort"
    (root / "normal").mkdir(parents=True)
    photo = np.dstack([GREY8, np.roll(GREY8, 9, axis=1), 255 - GREY8])
    (root / "normal" / "photo.jpg").write_bytes(pillow_bytes(photo, "JPEG", quality=90))
    (root / "normal" / "grey.jpg").write_bytes(
        pillow_bytes(np.dstack([GREY8] * 3), "JPEG", quality=85))
    report = _folder_ingest(root, "mammo")
    assert [Path(r.path).name for r in report.records] == ["grey.jpg"]
    assert "colour image" in _skipped(report)["photo.jpg"]


# ---------------------------------------------------------------- 8. identifiers in names


def _named_cohort(root: Path) -> Path:
    for patient in ("SMITH_JOHN", "DOE_JANE"):
        folder = root / "benign" / patient
        folder.mkdir(parents=True)
        for view in ("L_CC", "R_CC"):
            (folder / f"{patient}_{view}.png").write_bytes(pillow_bytes(GREY8, "PNG"))
    return root


def test_pseudonymised_ids_hide_names_and_stay_stable(tmp_path):
    from radpath.data.ingest import ID_SCHEME

    root = _named_cohort(tmp_path / "cohort")
    key = tmp_path / "secret" / "pseudonym.key"
    runs = []
    for name in ("first", "second"):
        report = ingest("folder", root, tmp_path / name / "m.csv", workers=1,
                        options=SourceOptions(modality="mammo"), progress=False,
                        pseudonym_key=key)
        runs.append(report)
        text = report.manifest_path.read_text()
        ids = "".join(line.split(",", 2)[0] + line.split(",", 2)[1]
                      for line in text.splitlines()[1:])
        assert "SMITH" not in ids and "DOE" not in ids
        assert {r.id_scheme for r in read_manifest(report.manifest_path)} == {ID_SCHEME}
    first, second = (list(read_manifest(r.manifest_path)) for r in runs)
    assert [r.patient_id for r in first] == [r.patient_id for r in second]
    assert len({r.patient_id for r in first}) == 2 and len({r.image_id for r in first}) == 4
    assert key.stat().st_mode & 0o077 == 0  # readable by its owner only


def test_a_pseudonym_key_inside_the_outputs_is_refused(tmp_path):
    root = _named_cohort(tmp_path / "cohort")
    with pytest.raises(RadpathError, match="inside the output folder"):
        ingest("folder", root, tmp_path / "out" / "m.csv", workers=1,
               options=SourceOptions(modality="mammo"), progress=False,
               pseudonym_key=tmp_path / "out" / "key")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="counts processes through /proc")
def test_a_sigkilled_ingest_leaves_no_worker(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "cohort" / "benign"
    folder.mkdir(parents=True)
    big = np.rint(mammo_pixels(256) * 255).astype(np.uint8)
    for index in range(200):
        (folder / f"im{index:03d}.png").write_bytes(pillow_bytes(np.roll(big, index, 1), "PNG"))
    command = [sys.executable, "-m", "radpath", "ingest", "folder", str(tmp_path / "cohort"),
               "--out", str(tmp_path / "out" / "m.csv"), "--modality", "mammo",
               "--workers", "2"]
    run = subprocess.Popen(command, cwd=Path(__file__).parents[2], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(run.pid)) < 2 and time.monotonic() < deadline:
            assert run.poll() is None, "the ingest ended before it could be killed"
            time.sleep(0.05)
        assert len(workers) >= 2, "the pool never started"
        run.send_signal(signal.SIGKILL)
        run.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [w for w in workers if _alive(w)] == []
        assert not (tmp_path / "out" / "m.csv").exists()  # nothing half-written
    finally:
        # The workers found: once their parent is gone they are no longer its children.
        for pid in {*workers, *_children(run.pid)}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.kill()


def _crash_on_three(item: int) -> int:
    if item == 3:
        os.kill(os.getpid(), 11)  # SIGSEGV, as a C decoder's bad read would
    return item * 10


def test_a_worker_crash_costs_only_its_own_item():
    from radpath.parallel import parallel_map

    results = parallel_map(_crash_on_three, list(range(8)), workers=2, progress=False,
                           on_crash=lambda item: -item)
    assert results == [0, 10, 20, -3, 40, 50, 60, 70]
