"""Tests of the synthetic cohort: a valid manifest, sound ground truth, determinism."""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radpath.data.manifest import Manifest, read_manifest
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    out = tmp_path_factory.mktemp("synthetic")
    # CPU time, not wall time: on a loaded host (other jobs on the same cores) the wall
    # clock measures the neighbours.
    start = time.process_time()
    path = make_synthetic_cohort(out)
    assert time.process_time() - start < 5.0
    return read_manifest(path)


def _pixels(path: str) -> np.ndarray:
    image = np.asarray(Image.open(path)).astype(np.float64)
    return image / (65535.0 if image.max() > 255 else 255.0)


def test_manifest_has_both_modalities_and_mixes_patients(cohort: Manifest) -> None:
    modalities: dict[str, set[str]] = defaultdict(set)
    for record in cohort:
        modalities[record.patient_id].add(record.modality)
        assert Path(record.path).is_absolute() and Path(record.path).is_file()
        assert record.source == "synthetic"
    kinds = {frozenset(m) for m in modalities.values()}
    assert kinds == {frozenset({"mammo"}), frozenset({"histo"}), frozenset({"mammo", "histo"})}
    assert len(modalities) == 24
    assert {r.label for r in cohort} == {"normal", "benign", "malignant"}
    assert {r.grade for r in cohort if r.label == "malignant" and r.modality == "histo"} <= {
        "1", "2", "3"}


def test_mammograms_are_cc_pairs_and_tiles_are_rgb(cohort: Manifest) -> None:
    mammo = cohort.filter(modality="mammo")
    assert {r.view for r in mammo} == {"CC"} and {r.laterality for r in mammo} == {"L", "R"}
    assert _pixels(mammo[0].path).ndim == 2
    tile = np.asarray(Image.open(cohort.filter(modality="histo")[0].path))
    assert tile.shape == (128, 128, 3)


def test_lesions_in_bounds_and_brighter_than_surroundings(cohort: Manifest) -> None:
    lesioned = [r for r in cohort if r.lesions]
    assert {lesion.kind for r in lesioned for lesion in r.lesions} == {"mass", "calc"}
    for record in lesioned:
        image = _pixels(record.path)
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        for lesion in record.lesions:
            assert lesion.r <= lesion.x <= image.shape[1] - lesion.r
            assert lesion.r <= lesion.y <= image.shape[0] - lesion.r
            distance = np.hypot(xx - lesion.x, yy - lesion.y)
            inside = image[distance <= lesion.r].mean()
            ring = image[(distance > lesion.r) & (distance <= 2 * lesion.r)].mean()
            assert inside > ring, (record.image_id, lesion)
    assert all(r.label == "normal" for r in cohort.filter(modality="mammo") if not r.lesions)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    config = SyntheticConfig(n_patients=4, mammo_size=96, tile_size=48, seed=5)
    first = read_manifest(make_synthetic_cohort(tmp_path / "a", config))
    second = read_manifest(make_synthetic_cohort(tmp_path / "b", config))
    for a, b in zip(first, second, strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes(), a.image_id
    other = read_manifest(make_synthetic_cohort(tmp_path / "c", config.model_copy(
        update={"seed": 6})))
    assert Path(other[0].path).read_bytes() != Path(first[0].path).read_bytes()


def test_domains_differ(cohort: Manifest) -> None:
    mammo_means: dict[str, list[float]] = defaultdict(list)
    stain_means: dict[str, list[np.ndarray]] = defaultdict(list)
    for record in cohort:
        if record.modality == "mammo":
            mammo_means[record.domain].append(_pixels(record.path).mean())
        else:
            stain_means[record.domain].append(np.asarray(Image.open(record.path)).mean((0, 1)))
    assert sorted(mammo_means) == ["site-a", "site-b", "site-c"]
    means = sorted(float(np.mean(v)) for v in mammo_means.values())
    assert min(b - a for a, b in itertools.pairwise(means)) > 0.01
    colours = [np.mean(v, axis=0) for v in stain_means.values()]
    assert max(np.abs(colours[0] - c).max() for c in colours[1:]) > 3


def test_config_is_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        SyntheticConfig(n_patient=3)  # type: ignore[call-arg]


def _high_frequency(path: str) -> float:
    """Standard deviation of the difference of horizontally adjacent pixels."""
    pixels = _pixels(path)
    return float(np.diff(pixels.reshape(*pixels.shape[:2], -1), axis=1).std())


def test_shortcut_noise_follows_the_agreement_of_each_site(tmp_path: Path) -> None:
    config = SyntheticConfig(n_patients=90, mammo_size=64, tile_size=32, both_fraction=1.0,
                             shortcut_agreement=(1.0, 0.0, 0.5), shortcut_noise=0.08)
    cohort = read_manifest(make_synthetic_cohort(tmp_path / "s", config))
    clean = read_manifest(make_synthetic_cohort(tmp_path / "c", config.model_copy(
        update={"shortcut_agreement": ()})))
    noisy: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for record, reference in zip(cohort, clean, strict=True):
        if record.modality != "mammo" or record.laterality != "L":
            continue
        extra = _high_frequency(record.path) - _high_frequency(reference.path)
        noisy[record.domain].append((_malignant(cohort, record), extra > 0.02))
    # site-a: noisy exactly when malignant; site-b: exactly when not; site-c: a mixture.
    assert all(malignant == flag for malignant, flag in noisy["site-a"])
    assert all(malignant != flag for malignant, flag in noisy["site-b"])
    agreement = np.mean([m == f for m, f in noisy["site-c"]])
    assert 0.2 < agreement < 0.8


def _malignant(cohort: Manifest, record) -> bool:
    return any(r.label == "malignant" for r in cohort if r.patient_id == record.patient_id)


def test_shortcut_off_changes_nothing(tmp_path: Path) -> None:
    config = SyntheticConfig(n_patients=6, mammo_size=64, tile_size=32)
    plain = read_manifest(make_synthetic_cohort(tmp_path / "a", config))
    unused = read_manifest(make_synthetic_cohort(tmp_path / "b", config.model_copy(
        update={"shortcut_noise": 0.2})))
    for a, b in zip(plain, unused, strict=True):
        assert Path(a.path).read_bytes() == Path(b.path).read_bytes(), a.image_id


def test_shortcut_agreement_needs_one_probability_per_site() -> None:
    with pytest.raises(ValueError, match="one probability per site"):
        SyntheticConfig(domains=3, shortcut_agreement=(0.9, 0.1))


def test_label_noise_flips_recorded_labels_not_images(tmp_path) -> None:
    base = dict(n_patients=30, mammo_size=64, tile_size=32)
    clean = read_manifest(make_synthetic_cohort(tmp_path / "clean", SyntheticConfig(**base)))
    noisy = read_manifest(make_synthetic_cohort(
        tmp_path / "noisy", SyntheticConfig(**base, cause_agreement=(1.0, 0.5, 0.5))))
    flipped = set()
    for before, after in zip(clean, noisy, strict=True):
        # Without the shortcut the images depend only on what they show.
        assert Path(before.path).read_bytes() == Path(after.path).read_bytes()
        if before.label != after.label:
            flipped.add(after.patient_id)
            assert after.domain != "site-a"  # agreement 1.0 there
            assert (before.label == "malignant") != (after.label == "malignant")
            assert after.grade == ""
    assert 3 <= len(flipped) <= 17


def test_label_noise_needs_one_agreement_per_site() -> None:
    with pytest.raises(ValueError, match="cause_agreement needs one probability per site"):
        SyntheticConfig(cause_agreement=(0.9, 0.8))
