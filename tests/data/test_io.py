"""Image reading: every format, the scaling rules, the guards, and no identifier leaks."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tifffile
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, SecondaryCaptureImageStorage

from radpath.data.io import ImageData, image_size, read_dicom_header, read_image
from radpath.errors import ImageReadError

IDENTIFIERS = ("Doe^Jane", "SECRET-ID-42", "19700101", "St Elsewhere Hospital", "ACC998877")
RAMP16 = np.arange(48, dtype=np.uint16).reshape(6, 8) * 80  # 0..3760, fits in 12 bits


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                bits: int | None = None, **tags: object) -> Path:
    """A minimal secondary-capture DICOM, carrying fake identifiers to check for leaks."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = IDENTIFIERS[:3]
    ds.InstitutionName, ds.AccessionNumber = IDENTIFIERS[3:]
    ds.Modality = "MG"
    ds.set_pixel_data(pixels, "RGB" if photometric == "RGB" else "MONOCHROME2",
                      bits or pixels.dtype.itemsize * 8)
    ds.PhotometricInterpretation = photometric
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_pgm(path: Path, pixels: np.ndarray, maxval: int) -> Path:
    height, width = pixels.shape
    dtype = ">u2" if maxval > 255 else "u1"
    path.write_bytes(f"P5\n{width} {height}\n{maxval}\n".encode() + pixels.astype(dtype).tobytes())
    return path


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (its pixel data is a stub)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def assert_grey(image: ImageData, shape: tuple[int, int]) -> None:
    assert image.kind == "grey"
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == shape
    assert 0.0 <= image.pixels.min() < image.pixels.max() <= 1.0


# --------------------------------------------------------------------------- Pillow formats


def test_png_8_bit_grey_is_scaled_by_255(tmp_path: Path) -> None:
    pixels = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert_grey(image, (6, 8))
    assert image.bits == 8
    np.testing.assert_allclose(image.pixels, pixels / 255, atol=1e-6)
    assert image.meta["format"] == "png"


def test_png_16_bit_grey_is_scaled_by_65535(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert_grey(image, (6, 8))
    assert image.bits == 16
    np.testing.assert_allclose(image.pixels, RAMP16 / 65535, atol=1e-6)


@pytest.mark.parametrize(("maxval", "bits"), [(255, 8), (65535, 16), (4095, 12)])
def test_p5_pgm_is_scaled_by_its_maxval(tmp_path: Path, maxval: int, bits: int) -> None:
    pixels = (np.arange(48).reshape(6, 8) * maxval // 47).astype(np.uint16)
    image = read_image(write_pgm(tmp_path / "mdb001.pgm", pixels, maxval))
    assert_grey(image, (6, 8))
    assert image.bits == bits
    np.testing.assert_allclose(image.pixels, pixels / maxval, atol=1e-4)


def test_plain_p2_pgm(tmp_path: Path) -> None:
    (tmp_path / "a.pgm").write_text("P2\n# a comment\n3 2\n255\n0 51 102\n153 204 255\n")
    image = read_image(tmp_path / "a.pgm")
    np.testing.assert_allclose(image.pixels, [[0, 0.2, 0.4], [0.6, 0.8, 1.0]], atol=1e-6)


def test_jpeg_colour_is_rgb_uint8(tmp_path: Path) -> None:
    pixels = np.zeros((16, 16, 3), np.uint8)
    pixels[..., 0], pixels[8:, :, 2] = 200, 120
    Image.fromarray(pixels).save(tmp_path / "a.jpg", quality=95)
    image = read_image(tmp_path / "a.jpg")
    assert (image.kind, image.pixels.dtype, image.pixels.shape) == ("rgb", np.uint8, (16, 16, 3))
    assert abs(int(image.pixels[0, 0, 0]) - 200) < 10


def test_rgba_and_palette_png_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 1], rgba[..., 3], rgba[0, 0, 0] = 90, 7, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    image = read_image(tmp_path / "rgba.png")
    assert image.pixels.shape == (4, 5, 3)
    assert image.pixels[1, 1].tolist() == [0, 90, 0]  # alpha dropped, not composited
    Image.fromarray(rgba[..., :3]).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").kind == "rgb"


def test_equal_channel_rgb_stays_rgb(tmp_path: Path) -> None:
    grey3 = np.repeat((np.arange(20, dtype=np.uint8) * 10).reshape(4, 5, 1), 3, axis=2)
    Image.fromarray(grey3).save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").kind == "rgb"


def test_unknown_suffix_is_tried_with_pillow(tmp_path: Path) -> None:
    Image.fromarray(np.arange(20, dtype=np.uint8).reshape(4, 5)).save(tmp_path / "a.img", "PNG")
    assert read_image(tmp_path / "a.img").kind == "grey"


# --------------------------------------------------------------------------- TIFF


def test_rgb_tiff(tmp_path: Path) -> None:
    pixels = np.zeros((6, 7, 3), np.uint8)
    pixels[..., 0] = np.arange(7) * 30
    tifffile.imwrite(tmp_path / "a.tif", pixels, photometric="rgb")
    image = read_image(tmp_path / "a.tif")
    assert image.kind == "rgb"
    np.testing.assert_array_equal(image.pixels, pixels)
    assert image_size(tmp_path / "a.tif") == (6, 7)


def test_16_bit_tiff_and_min_is_white(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "black.tif", RAMP16, photometric="minisblack")
    tifffile.imwrite(tmp_path / "white.tif", RAMP16, photometric="miniswhite")
    black, white = read_image(tmp_path / "black.tif"), read_image(tmp_path / "white.tif")
    assert black.bits == 16
    np.testing.assert_allclose(black.pixels, RAMP16 / 65535, atol=1e-6)
    np.testing.assert_allclose(white.pixels, 1 - black.pixels, atol=1e-6)


# --------------------------------------------------------------------------- DICOM


def test_dicom_monochrome2_scaled_by_bits_stored(tmp_path: Path) -> None:
    image = read_image(write_dicom(tmp_path / "a.dcm", RAMP16, bits=12, ViewPosition="CC",
                                   ImageLaterality="L"))
    assert_grey(image, (6, 8))
    assert image.bits == 12
    np.testing.assert_allclose(image.pixels, RAMP16 / 4095, atol=1e-6)
    assert image.meta["laterality"] == "L" and image.meta["view"] == "CC"
    assert image.meta["format"] == "dicom"
    assert image_size(tmp_path / "a.dcm") == (6, 8)


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    image = read_image(write_dicom(tmp_path / "a.dcm", RAMP16, photometric="MONOCHROME1",
                                   bits=12))
    np.testing.assert_allclose(image.pixels, 1 - RAMP16 / 4095, atol=1e-6)
    assert image.pixels[0, 0] == pytest.approx(1.0)


def test_dicom_voi_window(tmp_path: Path) -> None:
    # Window 1000..2000 of a 12-bit image: below -> 0, above -> 1, linear in between.
    image = read_image(write_dicom(tmp_path / "a.dcm", RAMP16, bits=12, WindowCenter=1500.5,
                                   WindowWidth=1001))
    assert image.meta["voi"] == "window"
    flat, raw = image.pixels.ravel(), RAMP16.ravel()
    assert (flat[raw <= 1000] == 0).all() and (flat[raw >= 2000] == 1).all()
    middle = (raw > 1000) & (raw < 2000)
    np.testing.assert_allclose(flat[middle], (raw[middle] - 1000) / 1000, atol=2e-3)


def test_dicom_invalid_window_falls_back_to_full_range(tmp_path: Path) -> None:
    image = read_image(write_dicom(tmp_path / "a.dcm", RAMP16, bits=12, WindowCenter=100,
                                   WindowWidth=0))
    np.testing.assert_allclose(image.pixels, RAMP16 / 4095, atol=1e-6)


def test_dicom_rescale_uses_modality_output_range(tmp_path: Path) -> None:
    image = read_image(write_dicom(tmp_path / "a.dcm", RAMP16, bits=12, RescaleSlope=2,
                                   RescaleIntercept=-1000))
    np.testing.assert_allclose(image.pixels, RAMP16 / 4095, atol=1e-6)


def test_dicom_rle_lossless(tmp_path: Path) -> None:
    plain = read_image(write_dicom(tmp_path / "plain.dcm", RAMP16, bits=12))
    ds = pydicom.dcmread(tmp_path / "plain.dcm")
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    image = read_image(tmp_path / "rle.dcm")
    assert image.meta["transfer_syntax"] == "RLE Lossless"
    np.testing.assert_array_equal(image.pixels, plain.pixels)


def test_dicom_rgb(tmp_path: Path) -> None:
    pixels = np.zeros((4, 5, 3), np.uint8)
    pixels[..., 2] = np.arange(5) * 50
    image = read_image(write_dicom(tmp_path / "a.dcm", pixels, photometric="RGB"))
    assert image.kind == "rgb"
    np.testing.assert_array_equal(image.pixels, pixels)


def test_dicom_multi_frame_takes_the_first_frame(tmp_path: Path) -> None:
    frames = np.stack([RAMP16, RAMP16[::-1]])
    image = read_image(write_dicom(tmp_path / "a.dcm", frames, bits=12))
    assert image.pixels.shape == (6, 8)
    assert image.meta["frames"] == "2"
    np.testing.assert_allclose(image.pixels, RAMP16 / 4095, atol=1e-6)


def test_dicom_palette_colour_is_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "a.dcm", RAMP16.astype(np.uint8), photometric="PALETTE COLOR")
    with pytest.raises(ImageReadError, match="PALETTE COLOR") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_read_dicom_header_refuses_other_files(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    with pytest.raises(ImageReadError, match="not a DICOM"):
        read_dicom_header(tmp_path / "a.png")
    assert read_dicom_header(write_dicom(tmp_path / "a.dcm", RAMP16)).Rows == 6


def test_no_identifier_in_meta_or_errors(tmp_path: Path) -> None:
    texts = [repr(read_image(write_dicom(tmp_path / "ok.dcm", RAMP16, bits=12)).meta)]
    bad = [
        write_dicom(tmp_path / "palette.dcm", RAMP16, photometric="PALETTE COLOR"),
        write_dicom(tmp_path / "constant.dcm", np.full((4, 4), 7, np.uint16)),
    ]
    ds = pydicom.dcmread(tmp_path / "ok.dcm")
    ds.PixelData = ds.PixelData[:10]  # truncated pixel data
    ds.save_as(tmp_path / "short.dcm")
    bad.append(tmp_path / "short.dcm")
    for path in bad:
        with pytest.raises(ImageReadError) as info:
            read_image(path)
        texts.append(str(info.value))
    joined = "\n".join(texts)
    for identifier in IDENTIFIERS:
        assert identifier not in joined


# --------------------------------------------------------------------------- guards


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="file not found") as info:
        read_image(tmp_path / "nope.png")
    assert "nope.png" in str(info.value)
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)


def test_truncated_png(tmp_path: Path) -> None:
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(
        tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_image(tmp_path / "cut.png")


def test_text_file_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("this is not an image\n")
    with pytest.raises(ImageReadError, match=r"notes\.png: not an image"):
        read_image(tmp_path / "notes.png")


def test_text_file_named_tif_and_dcm(tmp_path: Path) -> None:
    for name in ("notes.tif", "notes.dcm"):
        (tmp_path / name).write_text("this is not an image\n")
        with pytest.raises(ImageReadError, match=re.escape(name)):
            read_image(tmp_path / name)


def test_constant_image(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 17, np.uint8)).save(tmp_path / "flat.png")
    with pytest.raises(ImageReadError, match=r"flat\.png: constant image \(every pixel is 17\)"):
        read_image(tmp_path / "flat.png")


def test_constant_colour_image(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "red.png")
    with pytest.raises(ImageReadError, match="constant image"):
        read_image(tmp_path / "red.png")


def test_oversized_header_is_refused_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "bomb.png").write_bytes(png_header(13_000, 13_000))
    with pytest.raises(ImageReadError, match=r"bomb\.png: .*exceeds the limit"):
        read_image(tmp_path / "bomb.png")
    (tmp_path / "huge.png").write_bytes(png_header(100_000, 100_000))
    with pytest.raises(ImageReadError, match=r"huge\.png: .*exceeds"):
        read_image(tmp_path / "huge.png")


def test_small_max_pixels_for_every_reader(tmp_path: Path) -> None:
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "a.tif", RAMP16)
    write_dicom(tmp_path / "a.dcm", RAMP16)
    for name in ("a.png", "a.tif", "a.dcm"):
        with pytest.raises(ImageReadError, match="48 pixels exceeds the limit of 47"):
            read_image(tmp_path / name, max_pixels=47)


def test_zero_size_image(tmp_path: Path) -> None:
    (tmp_path / "empty.pgm").write_bytes(b"P5\n0 4\n255\n")
    with pytest.raises(ImageReadError, match=r"empty\.pgm"):
        read_image(tmp_path / "empty.pgm")


# --------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_mias_png(mias_dir: Path) -> None:
    image = read_image(mias_dir / "mdb001.png")
    assert_grey(image, (1024, 1024))
    assert image.bits == 8


@pytest.mark.realdata
def test_real_ucsb_tiff(ucsb_dir: Path) -> None:
    image = read_image(sorted(ucsb_dir.glob("*.tif"))[0])
    assert (image.kind, image.pixels.dtype, image.pixels.shape) == ("rgb", np.uint8, (768, 896, 3))
    assert image.pixels.min() < image.pixels.max()


@pytest.mark.realdata
def test_real_cbis_dicom(cbis_cases_dir: Path) -> None:
    path = cbis_cases_dir / "sfm-benign-0" / "1-130.dcm"
    image = read_image(path)
    assert_grey(image, image_size(path))
    assert image.pixels.shape[0] > 4000 and image.pixels.shape[1] > 2500
    assert image.bits == 16
    assert image.meta["transfer_syntax"] == "RLE Lossless"
    assert "Mass-Test" not in repr(image.meta)  # the CBIS PatientID stays out of meta
