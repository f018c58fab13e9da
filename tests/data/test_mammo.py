"""Tests of mammography preprocessing on synthetic films and, when present, real MIAS films."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
from PIL import Image

from radpath.data.mammo import (
    Geometry,
    MammoConfig,
    MammoPreprocessor,
    breast_mask,
    infer_laterality,
)
from radpath.data.manifest import Lesion

LABEL = (slice(10, 40), slice(-60, -20))  # rows, columns of the film label (top corner)


def ellipse(height: int, width: int, *, side: str = "L") -> np.ndarray:
    """The ground-truth mask of a half-ellipse whose flat edge (chest wall) is on ``side``."""
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    centre_x = 0.0 if side == "L" else width
    dx, dy = (cols - centre_x) / (0.6 * width), (rows - height / 2) / (0.4 * height)
    return dx**2 + dy**2 <= 1


def film(height: int = 200, width: int = 160, *, side: str = "L", label: bool = True,
         blob: tuple[float, float, float] | None = None, seed: int = 0) -> np.ndarray:
    """A synthetic mammogram: a breast brightest at the chest wall, a label, film grain."""
    rng = np.random.default_rng(seed)
    cols = np.arange(width) + 0.5
    distance = cols if side == "L" else width - cols
    tissue = 0.35 + 0.3 * (1 - distance / width)  # thicker, so brighter, at the chest wall
    image = np.where(ellipse(height, width, side=side), tissue[None, :], 0.02)
    image = image + rng.normal(0, 0.01, image.shape)
    if label:
        # The label sits in the corner away from the breast, as on real films.
        columns = LABEL[1] if side == "L" else slice(20, 60)
        image[LABEL[0], columns] = 0.95
    if blob is not None:
        x, y, r = blob
        rows, cols2 = np.mgrid[0:height, 0:width] + 0.5
        image[(cols2 - x) ** 2 + (rows - y) ** 2 <= r**2] = 0.9
    return np.clip(image, 0, 1).astype(np.float32)


def breast_side(image: np.ndarray) -> str:
    """The half of the output holding more intensity."""
    half = image.shape[1] // 2
    return "L" if image[:, :half].sum() > image[:, half:].sum() else "R"


# --- geometry ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(200, 160), (160, 240), (97, 301)])
@pytest.mark.parametrize("config", [
    MammoConfig(size=64),
    MammoConfig(size=64, crop=False),
    MammoConfig(size=48, flip_to="R", crop_margin=0.1),
    MammoConfig(size=128, flip_to="none", segment=False),
    MammoConfig(size=400),  # upsampling
])
@pytest.mark.parametrize("side", ["L", "R"])
def test_points_round_trip(shape: tuple[int, int], config: MammoConfig, side: str) -> None:
    result = MammoPreprocessor(config).transform(film(*shape, side=side), laterality=side)
    points = np.random.default_rng(1).uniform(0, max(shape), size=(50, 2))
    geometry = result.geometry
    np.testing.assert_allclose(geometry.to_original(geometry.to_output(points)), points,
                               atol=1e-6)
    np.testing.assert_allclose(geometry.to_output(geometry.to_original(points)), points,
                               atol=1e-6)
    assert result.image.shape == result.mask.shape == (config.size, config.size)
    assert geometry.flipped == (config.flip_to not in ("none", side))


def test_geometry_maps_corners_of_the_crop_to_the_content() -> None:
    geometry = Geometry(original_shape=(100, 200), crop_box=(10, 20, 60, 120), flipped=True,
                        scale=0.5, pad=(12, 0), output_size=50)
    # With the flip, the crop's top-right corner becomes the content's top-left corner.
    np.testing.assert_allclose(geometry.to_output(np.array([[120.0, 10.0], [20.0, 60.0]])),
                               [[0.0, 12.0], [50.0, 37.0]])
    lesion = geometry.lesion_to_output(Lesion(120.0, 10.0, 8.0, "CIRC"))
    assert lesion == Lesion(0.0, 12.0, 4.0, "CIRC")
    assert geometry.lesion_to_original(lesion) == Lesion(120.0, 10.0, 8.0, "CIRC")


def test_points_must_be_pairs() -> None:
    geometry = Geometry((10, 10), (0, 0, 10, 10), False, 1.0, (0, 0), 10)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        geometry.to_output(np.zeros((4, 3)))


# --- segmentation and orientation ---------------------------------------------------------

@pytest.mark.parametrize("side", ["L", "R"])
def test_segmentation_drops_the_label_and_covers_the_breast(side: str) -> None:
    image = film(side=side)
    mask = breast_mask(image)
    truth = ellipse(*image.shape, side=side)
    assert mask.dtype == bool and mask.shape == image.shape
    label_columns = LABEL[1] if side == "L" else slice(20, 60)
    assert not mask[LABEL[0], label_columns].any()
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95


def test_segmentation_of_a_nearly_uniform_image_falls_back_to_the_whole_image() -> None:
    image = 0.5 + np.random.default_rng(0).normal(0, 1e-4, (64, 64)).astype(np.float32)
    assert breast_mask(image).all()
    result = MammoPreprocessor(MammoConfig(size=32)).transform(image)
    assert result.mask.all() and np.isfinite(result.image).all()


@pytest.mark.parametrize("side", ["L", "R"])
def test_infer_laterality_finds_the_chest_wall(side: str) -> None:
    image = film(side=side)
    assert infer_laterality(image, breast_mask(image)) == side


@pytest.mark.parametrize("flip_to", ["L", "R"])
@pytest.mark.parametrize("side", ["L", "R"])
@pytest.mark.parametrize("given", [True, False])
def test_flip_puts_the_chest_wall_on_the_canonical_side(flip_to: str, side: str,
                                                         given: bool) -> None:
    prep = MammoPreprocessor(MammoConfig(size=64, flip_to=flip_to))  # type: ignore[arg-type]
    result = prep.transform(film(side=side), laterality=side if given else "")
    assert result.laterality == side
    assert breast_side(result.image) == flip_to
    # The chest wall touches the output edge: padding goes to the nipple side.
    edge = result.mask[:, 0] if flip_to == "L" else result.mask[:, -1]
    assert edge.mean() > 0.5


def test_flip_to_none_keeps_the_orientation() -> None:
    result = MammoPreprocessor(MammoConfig(size=64, flip_to="none")).transform(film(side="R"))
    assert not result.geometry.flipped
    assert breast_side(result.image) == "R"


@pytest.mark.parametrize("side", ["L", "R"])
def test_a_lesion_lands_on_its_blob(side: str) -> None:
    x = 30.0 if side == "L" else 130.0
    image = film(side=side, blob=(x, 120.0, 6.0))
    lesion = Lesion(x, 120.0, 6.0, "CIRC")
    config = MammoConfig(size=96, low_percentile=0.0, high_percentile=100.0)
    result = MammoPreprocessor(config).transform(image, laterality=side, lesions=[lesion])
    mapped = result.lesions[0]
    assert mapped.r == pytest.approx(6.0 * result.geometry.scale)
    # Corner convention: the point (x, y) lies in pixel (floor(y), floor(x)).
    assert result.image[int(mapped.y), int(mapped.x)] > 0.85
    assert result.geometry.lesion_to_original(mapped) == pytest.approx(lesion)


# --- intensities -------------------------------------------------------------------------

def test_percentile_normalisation_spans_zero_to_one_over_the_breast() -> None:
    result = MammoPreprocessor(MammoConfig(size=64)).transform(film())
    breast = result.image[result.mask]
    assert result.image.dtype == np.float32
    assert result.image.min() == 0.0 and result.image.max() == 1.0
    assert np.percentile(breast, 0.5) == 0.0 and np.percentile(breast, 99.5) == 1.0
    assert (result.image[~result.mask] == 0).all()


def test_without_segmentation_the_background_is_kept() -> None:
    image = film(label=True)
    result = MammoPreprocessor(MammoConfig(size=64, segment=False, crop=False)).transform(image)
    x, y = result.geometry.to_output(np.array([120.0, 25.0]))  # the label's centre
    assert result.image[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].min() == 1.0
    assert not result.mask[int(y), int(x)]


def test_clahe_runs_and_stays_in_range() -> None:
    image = film()
    plain = MammoPreprocessor(MammoConfig(size=64)).transform(image)
    clahe = MammoPreprocessor(MammoConfig(size=64, clahe=True, clahe_grid=4)).transform(image)
    assert clahe.image.dtype == np.float32
    assert clahe.image.min() >= 0.0 and clahe.image.max() <= 1.0
    assert not np.allclose(clahe.image, plain.image)
    assert (clahe.image[~clahe.mask] == 0).all()


# --- validation --------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"size": 8},
    {"low_percentile": 50, "high_percentile": 50},
    {"low_percentile": 60, "high_percentile": 40},
    {"high_percentile": 101},
    {"low_percentile": -1},
    {"crop_margin": -0.1},
    {"clahe_clip": 0},
    {"clahe_grid": 0},
    {"flip_to": "left"},
    {"sizes": 256},
])
def test_config_rejects_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        MammoConfig(**changes)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        MammoConfig().size = 256  # type: ignore[misc]


@pytest.mark.parametrize(("image", "message"), [
    (np.full((64, 64), 0.3, dtype=np.float32), "constant"),
    (np.random.default_rng(0).random((8, 64)), "too small"),
    (np.zeros((64, 64, 3)), "greyscale"),
    (np.full((64, 64), np.nan), "NaN"),
])
def test_transform_rejects_unusable_images(image: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MammoPreprocessor().transform(image)


def test_transform_rejects_an_unknown_laterality() -> None:
    with pytest.raises(ValueError, match="'left'"):
        MammoPreprocessor(MammoConfig(size=32)).transform(film(), laterality="left")


def test_fit_returns_self() -> None:
    prep = MammoPreprocessor()
    assert prep.fit() is prep and prep.fit([film()]) is prep


def test_non_square_content_is_centred_vertically() -> None:
    result = MammoPreprocessor(MammoConfig(size=64, crop=False)).transform(film(100, 200))
    assert result.geometry.pad == (16, 0)
    assert not result.mask[:16].any() and not result.mask[-16:].any()


# --- real MIAS films ---------------------------------------------------------------------

def read_mias(mias_dir: Path, number: int) -> np.ndarray:
    path = mias_dir / f"mdb{number:03d}.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


@pytest.mark.realdata
@pytest.mark.parametrize(("number", "side"), [(1, "R"), (2, "L"), (13, "R"), (14, "L")])
def test_mias_breast_lands_on_the_canonical_side(mias_dir: Path, number: int,
                                                 side: str) -> None:
    image = read_mias(mias_dir, number)
    assert infer_laterality(image, breast_mask(image)) == side
    for flip_to in ("L", "R"):
        config = MammoConfig(size=256, flip_to=flip_to)  # type: ignore[arg-type]
        result = MammoPreprocessor(config).transform(image)
        assert result.laterality == side
        assert breast_side(result.image) == flip_to


@pytest.mark.realdata
def test_mias_labels_are_removed(mias_dir: Path) -> None:
    image = read_mias(mias_dir, 2)  # mdb002 has an "R ML" label right of the breast
    mask = breast_mask(image)
    assert not mask[90:240, 715:815].any()
    assert mask[600, 300]  # and the breast is kept


@pytest.mark.realdata
def test_mias_lesion_maps_into_the_breast_and_back(mias_dir: Path) -> None:
    image = read_mias(mias_dir, 1)
    # Info.txt: "mdb001 G CIRC B 535 425 197", y measured up from the bottom edge.
    lesion = Lesion(535.0, 1024.0 - 425.0, 197.0, "CIRC")
    result = MammoPreprocessor(MammoConfig(size=512)).transform(image, laterality="R",
                                                                lesions=[lesion])
    mapped = result.lesions[0]
    assert result.geometry.flipped
    assert 0 <= mapped.x < 512 and 0 <= mapped.y < 512
    assert result.mask[int(mapped.y), int(mapped.x)]
    assert result.image[int(mapped.y), int(mapped.x)] > 0.5  # a dense mass, bright
    back = result.geometry.lesion_to_original(mapped)
    assert (back.x, back.y, back.r) == pytest.approx((535.0, 599.0, 197.0), abs=1e-6)
