"""A synthetic mammography + H&E cohort with known ground truth, for tests and the demo.

Nothing learnt or measured on this cohort is a result: the manifest's ``source`` column
says ``synthetic`` so reports can refuse it.

Conventions:
    * Mammograms are CC views, one per breast. The chest wall lies along the image edge of
      the breast's own side: the LEFT edge for laterality ``L``, the RIGHT edge for ``R``
      (the breast points towards the image centre, as most DICOM mammograms are stored).
    * A bright rectangular "film label" sits in a top corner on the side away from the chest
      wall, outside the breast, for segmentation to remove.
    * Mammograms of even-numbered domains are 8-bit PNGs, of odd-numbered ones 16-bit PNGs
      using the full 0..65535 range, so both readers are exercised.
    * Lesions are circles in original pixels, origin top-left: ``mass`` (benign: round and
      smooth; malignant: irregular with spicules, whose core radius is recorded) and
      ``calc`` (a cluster of tiny bright dots; the circle encloses every dot).
    * H&E tiles are RGB, built by Beer-Lambert mixing of haematoxylin (nuclei) and eosin
      (stroma). Nuclear density, size, size variability and crowding grow with malignancy
      and grade.
    * Domains ``site-a``, ``site-b``, ... differ in mammogram gamma, gain and noise and in
      the H&E stain vectors (rotated in optical-density space), stain strength and noise.
    * Optionally, a *shortcut*: some patients are imaged on a noisier device (extra
      Gaussian noise on every image, both modalities), and how often that device goes with
      malignancy is set per site (``shortcut_agreement``). Where the agreement is high the
      noise predicts malignancy; where it is low the relation is reversed. It mimics a real
      confounder (diagnostic work-ups imaged on another unit than screening) and survives
      the preprocessing (percentile normalisation and stain normalisation do not remove
      noise). A model that learns it fails at a site where the relation is reversed: the
      "known shift" of the domain-generalisation benchmark.
    * Optionally, label noise (``cause_agreement``, per site): a patient's recorded label
      is flipped between malignant and not (malignant to benign, normal or benign to
      malignant) with probability one minus the site's agreement, while the images still
      show the drawn class; the noisy device then goes with the *recorded* label. As in
      Arjovsky et al.'s Colored MNIST, the cause (what the images show) then predicts the
      recorded label less well than a strong shortcut does, which tempts plain training
      to the shortcut; only the shortcut's disagreement between sites gives it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from radpath.data.manifest import LABELS, Lesion, Record, write_manifest

# Ruifrok & Johnston's optical-density stain vectors (rows: haematoxylin, eosin).
STAIN_VECTORS = np.array([[0.650, 0.704, 0.286], [0.072, 0.990, 0.105]], dtype=np.float64)
MAGNIFICATION = "200"


class SyntheticConfig(BaseModel):
    """Size and make-up of the synthetic cohort.

    Attributes:
        n_patients: number of patients; labels cycle normal, benign, malignant.
        mammo_size: side of the square mammograms in pixels.
        tile_size: side of the square H&E tiles in pixels.
        tiles_per_patient: H&E tiles per patient with histology.
        domains: number of acquisition sites.
        both_fraction: share of patients with both modalities; the others alternate
            between mammo-only and histo-only.
        shortcut_agreement: per site (in order), the probability that a patient's
            device is the noisy one exactly when the patient is malignant; empty means no
            shortcut (no patient gets the extra noise). 0.5 makes the noise uninformative.
        shortcut_noise: standard deviation of the noisy device's extra noise, as a
            fraction of the intensity range.
        cause_agreement: per site, the probability that a patient's recorded label is
            the class the images show (malignant or not); empty means no label noise.
        lesion_scale: how conspicuous a malignant lesion is: it widens and brightens the
            spicules and enlarges the calcification dots. At 1 a spicule is one pixel wide
            at 256 px, so it fades when a mammogram is resized to 128 px; the demo raises it
            so that its small model can see, at its resolution, what makes a lesion
            malignant.
        seed: the cohort's seed; the same seed gives byte-identical files.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_patients: int = Field(24, ge=1)
    mammo_size: int = Field(256, ge=64)
    tile_size: int = Field(128, ge=32)
    tiles_per_patient: int = Field(2, ge=1)
    domains: int = Field(3, ge=1, le=26)
    both_fraction: float = Field(0.5, ge=0.0, le=1.0)
    shortcut_agreement: tuple[float, ...] = ()
    shortcut_noise: float = Field(0.05, ge=0.0, le=0.5)
    cause_agreement: tuple[float, ...] = ()
    lesion_scale: float = Field(1.0, ge=1.0, le=4.0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_per_site(self) -> SyntheticConfig:
        for name in ("shortcut_agreement", "cause_agreement"):
            agreement = getattr(self, name)
            if agreement and len(agreement) != self.domains:
                raise ValueError(f"{name} needs one probability per site ({self.domains}), "
                                 f"got {len(agreement)}")
            if any(not 0.0 <= p <= 1.0 for p in agreement):
                raise ValueError(f"{name} values must lie in [0, 1], got {agreement}")
        return self


@dataclass(frozen=True)
class _Patient:
    index: int
    patient_id: str
    label: str  # what the images show
    domain: int
    modalities: tuple[str, ...]
    noisy: bool = False
    recorded: str = ""  # the label the manifest records, when label noise flipped it

    @property
    def recorded_label(self) -> str:
        return self.recorded or self.label


def make_synthetic_cohort(out_dir: str | Path, config: SyntheticConfig | None = None) -> Path:
    """Write a synthetic cohort: PNG images under ``out_dir/images`` and ``out_dir/manifest.csv``.

    Args:
        out_dir: the folder to write into (created if needed).
        config: the cohort's make-up; defaults to :class:`SyntheticConfig()`.

    Returns:
        The path of the manifest, whose image paths are absolute.
    """
    config = config or SyntheticConfig()
    out_dir = Path(out_dir).resolve()
    records: list[Record] = []
    for patient in _plan_patients(config):
        # One generator per patient: a patient's images do not depend on the others.
        rng = np.random.default_rng([config.seed, patient.index])
        folder = out_dir / "images" / patient.patient_id
        folder.mkdir(parents=True, exist_ok=True)
        if "mammo" in patient.modalities:
            records += _write_mammograms(patient, config, rng, folder)
        if "histo" in patient.modalities:
            records += _write_tiles(patient, config, rng, folder)
    return write_manifest(records, out_dir / "manifest.csv")


def domain_name(index: int) -> str:
    """``site-a`` for domain 0, ``site-b`` for 1, ..."""
    return f"site-{chr(ord('a') + index)}"


def _plan_patients(config: SyntheticConfig) -> list[_Patient]:
    patients, singles = [], 0
    for i in range(config.n_patients):
        # Spread the both-modality patients evenly (Bresenham-style), not in one block.
        both = math.floor((i + 1) * config.both_fraction) > math.floor(i * config.both_fraction)
        if both:
            modalities: tuple[str, ...] = ("mammo", "histo")
        else:
            modalities = ("mammo",) if singles % 2 == 0 else ("histo",)
            singles += 1
        label, domain = LABELS[i % len(LABELS)], (i // len(LABELS)) % config.domains
        recorded = _recorded_label(config, i, label, domain)
        patients.append(_Patient(i, f"syn-p{i:03d}", label, domain, modalities,
                                 _noisy_device(config, i, recorded, domain),
                                 "" if recorded == label else recorded))
    return patients


def _recorded_label(config: SyntheticConfig, index: int, label: str, domain: int) -> str:
    """The label the manifest records (see ``cause_agreement``)."""
    if not config.cause_agreement:
        return label
    # Its own generator, as for the device: no other draw of the cohort changes.
    if np.random.default_rng([config.seed, index, 2]).random() < config.cause_agreement[domain]:
        return label
    return "benign" if label == "malignant" else "malignant"


def _noisy_device(config: SyntheticConfig, index: int, label: str, domain: int) -> bool:
    """Whether the patient is imaged on the noisy device (see ``shortcut_agreement``)."""
    if not config.shortcut_agreement:
        return False
    # Its own generator: switching the shortcut on changes no other draw of the cohort.
    agrees = np.random.default_rng([config.seed, index, 1]).random() < (
        config.shortcut_agreement[domain])
    return (label == "malignant") == agrees


def _spread(domain: int, domains: int, low: float, high: float) -> float:
    """A per-domain setting spread evenly over [low, high]."""
    return low if domains == 1 else low + (high - low) * domain / (domains - 1)


# --- mammograms ----------------------------------------------------------------------------


def _write_mammograms(patient: _Patient, config: SyntheticConfig, rng: np.random.Generator,
                      folder: Path) -> list[Record]:
    lesioned_side = "L" if rng.random() < 0.5 else "R"
    records = []
    for side in ("L", "R"):
        has_lesion = patient.label != "normal" and side == lesioned_side
        image, lesions = _mammogram(config.mammo_size, patient.label if has_lesion else "",
                                    rng, config.lesion_scale)
        if side == "R":
            image, lesions = _mirror(image, lesions)
        image = _mammo_domain(image, patient.domain, config.domains, rng)
        if patient.noisy:
            image = np.clip(image + rng.normal(0.0, config.shortcut_noise, image.shape),
                            0.0, 1.0).astype(np.float32)
        image_id = f"{patient.patient_id}-mammo-{side}-CC"
        path = folder / f"{image_id}.png"
        _save_grey(image, path, sixteen_bit=patient.domain % 2 == 1)
        # A flipped label lands on the breast that would carry the lesion.
        label = patient.recorded_label if side == lesioned_side else "normal"
        records.append(Record(
            image_id=image_id, patient_id=patient.patient_id, modality="mammo", path=str(path),
            label=label, domain=domain_name(patient.domain),
            view="CC", laterality=side, source="synthetic", lesions=lesions))
    return records


def _mammogram(size: int, label: str, rng: np.random.Generator,
               scale: float = 1.0) -> tuple[np.ndarray, tuple[Lesion, ...]]:
    """A left-breast CC mammogram in [0, 1] (chest wall at the left edge), with lesions."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre_y = size * rng.uniform(0.45, 0.55)
    semi_x, semi_y = size * rng.uniform(0.62, 0.78), size * rng.uniform(0.36, 0.44)
    radial = (xx / semi_x) ** 2 + ((yy - centre_y) / semi_y) ** 2
    breast = radial < 1.0
    # Tissue thins towards the skin line, so it darkens there, as in a real projection.
    thickness = np.sqrt(np.clip(1.0 - radial, 0.0, 1.0))
    texture = _smooth_noise(rng, (size, size), sigma=size / 40) * 0.07
    image = np.where(breast, 0.25 + 0.25 * thickness + texture, 0.0).astype(np.float32)
    lesions: list[Lesion] = []
    if label:
        cx, cy = _inside_breast(rng, centre_y, semi_x, semi_y)
        kinds = _lesion_kinds(label, rng)
        for kind in kinds:
            if kind == "mass":
                lesions.append(_draw_mass(image, cx, cy, label, rng, scale))
            else:
                # A calcification cluster beside the mass, or at the lesion site alone.
                offset = size * 0.12 if "mass" in kinds else 0.0
                lesions.append(_draw_calcs(image, cx + offset, cy - offset, rng, scale))
    _draw_film_label(image, rng)
    image += rng.normal(0.0, 0.01, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0), tuple(lesions)


def _lesion_kinds(label: str, rng: np.random.Generator) -> tuple[str, ...]:
    """Benign: a mass. Malignant: a mass, a calcification cluster, or both."""
    if label == "benign":
        return ("mass",)
    return (("mass",), ("mass", "calc"), ("calc",))[int(rng.integers(3))]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean noise smoothed to blobs of about ``sigma`` pixels, unit standard deviation."""
    noise = cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), sigma)
    return noise / (noise.std() + 1e-8)


def _inside_breast(rng: np.random.Generator, centre_y: float, semi_x: float,
                   semi_y: float) -> tuple[float, float]:
    # Well inside the ellipse, so the lesion and the ring around it stay in the breast.
    angle = rng.uniform(-0.9, 0.9)
    reach = rng.uniform(0.3, 0.5)
    return semi_x * reach * math.cos(angle), centre_y + semi_y * reach * math.sin(angle)


def _draw_mass(image: np.ndarray, cx: float, cy: float, label: str,
               rng: np.random.Generator, scale: float = 1.0) -> Lesion:
    size = image.shape[0]
    radius = size * rng.uniform(0.04, 0.065)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.arctan2(yy - cy, xx - cx)
    if label == "malignant":
        # An irregular margin: the radius wobbles with a few random harmonics.
        wobble = sum(rng.uniform(0.05, 0.12) * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
                     for k in (3, 5, 7))
        boundary = radius * (1.0 + wobble)
        spicules = np.zeros_like(image)
        # At scale 1 exactly the original one-pixel, 0.18 spicules (same files as before).
        width = max(1, round(scale * size / 256))
        shade = min(0.18 * scale, 0.4)
        for theta in rng.uniform(0, 2 * np.pi, int(rng.integers(8, 14))):
            length = radius * rng.uniform(1.6, 2.4)
            end = (round(cx + length * math.cos(theta)), round(cy + length * math.sin(theta)))
            cv2.line(spicules, (round(cx), round(cy)), end, shade, width, cv2.LINE_AA)
        image += spicules
    else:
        boundary = np.full_like(angle, radius)
    distance = np.hypot(xx - cx, yy - cy) / boundary
    # Smoothstep edge: soft for benign (round, well-circumscribed), sharper for malignant.
    width = 0.25 if label == "benign" else 0.12
    edge = np.clip((1.0 + width - distance) / (2 * width), 0.0, 1.0)
    image += 0.35 * edge * edge * (3 - 2 * edge)
    return Lesion(round(cx, 1), round(cy, 1), round(radius, 1), "mass")


def _draw_calcs(image: np.ndarray, cx: float, cy: float, rng: np.random.Generator,
                scale: float = 1.0) -> Lesion:
    size = image.shape[0]
    spread = size * rng.uniform(0.02, 0.035) * math.sqrt(scale)
    dot = max(1, round(scale * size / 256))
    count = int(rng.integers(12, 20))
    angles, reach = rng.uniform(0, 2 * np.pi, count), spread * np.sqrt(rng.uniform(0, 1, count))
    xs, ys = cx + reach * np.cos(angles), cy + reach * np.sin(angles)
    # Drawn on their own layer and added: calcifications are denser than any tissue.
    dots = np.zeros_like(image)
    for x, y in zip(xs, ys, strict=True):
        cv2.circle(dots, (round(x), round(y)), dot, 0.55, -1, cv2.LINE_AA)
    image += dots
    enclosing = float(np.max(np.hypot(xs - cx, ys - cy))) + dot + 1
    return Lesion(round(cx, 1), round(cy, 1), round(enclosing, 1), "calc")


def _draw_film_label(image: np.ndarray, rng: np.random.Generator) -> None:
    size = image.shape[0]
    width, height = round(size * rng.uniform(0.12, 0.18)), round(size * rng.uniform(0.06, 0.09))
    right = size - round(size * 0.04)
    top = round(size * 0.04)
    image[top:top + height, right - width:right] = 0.95
    # Dark "lettering" stripes, so the label is not a flat patch.
    for row in range(top + 2, top + height - 2, 4):
        image[row, right - width + 2:right - 2] = 0.55


def _mirror(image: np.ndarray, lesions: tuple[Lesion, ...]) -> tuple[np.ndarray,
                                                                    tuple[Lesion, ...]]:
    """The right-breast view: the image flipped left-right, lesion centres with it."""
    last = image.shape[1] - 1
    return image[:, ::-1].copy(), tuple(Lesion(round(last - les.x, 1), les.y, les.r, les.kind)
                                        for les in lesions)


def _mammo_domain(image: np.ndarray, domain: int, domains: int,
                  rng: np.random.Generator) -> np.ndarray:
    gamma = _spread(domain, domains, 0.7, 1.4)
    gain = _spread(domain, domains, 1.0, 0.85)
    noise = _spread(domain, domains, 0.005, 0.025)
    out = gain * np.power(image, gamma) + rng.normal(0.0, noise, image.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _save_grey(image: np.ndarray, path: Path, *, sixteen_bit: bool) -> None:
    if sixteen_bit:
        Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path)
    else:
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)


# --- H&E tiles -----------------------------------------------------------------------------


def _write_tiles(patient: _Patient, config: SyntheticConfig, rng: np.random.Generator,
                 folder: Path) -> list[Record]:
    grade = int(rng.integers(1, 4)) if patient.label == "malignant" else 0
    stains = _domain_stains(patient.domain, config.domains)
    strength = _spread(patient.domain, config.domains, 0.85, 1.15)
    noise = _spread(patient.domain, config.domains, 2.0, 6.0)
    records = []
    for k in range(config.tiles_per_patient):
        tile = _he_tile(config.tile_size, patient.label, grade, stains, strength,
                        math.hypot(noise, 255.0 * config.shortcut_noise * patient.noisy), rng)
        image_id = f"{patient.patient_id}-histo-{k}"
        path = folder / f"{image_id}.png"
        Image.fromarray(tile).save(path)
        recorded = patient.recorded_label
        records.append(Record(
            image_id=image_id, patient_id=patient.patient_id, modality="histo", path=str(path),
            label=recorded, domain=domain_name(patient.domain),
            magnification=MAGNIFICATION, subtype="synthetic",
            grade=str(grade) if grade and recorded == "malignant" else "",
            source="synthetic"))
    return records


def _domain_stains(domain: int, domains: int) -> np.ndarray:
    """The stain vectors rotated about the grey axis (a hue shift in optical density)."""
    angle = math.radians(_spread(domain, domains, -12.0, 12.0))
    axis = np.ones(3) / math.sqrt(3.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross
    stains = STAIN_VECTORS @ rotation.T
    stains = np.clip(stains, 0.01, None)
    return stains / np.linalg.norm(stains, axis=1, keepdims=True)


# Nuclei per 128x128 tile, mean radius (px at 128) and radius spread, by label / grade.
_NUCLEI = {"normal": (18, 3.0, 0.3), "benign": (32, 3.4, 0.5), "malignant": (40, 4.0, 0.8)}


def _he_tile(size: int, label: str, grade: int, stains: np.ndarray, strength: float,
             noise: float, rng: np.random.Generator) -> np.ndarray:
    scale = size / 128
    count, radius, spread = _NUCLEI[label]
    count, radius, spread = count + 12 * grade, radius + 0.4 * grade, spread + 0.3 * grade
    eosin = np.clip(0.35 + 0.12 * _smooth_noise(rng, (size, size), 3 * scale), 0.05, None)
    haem = np.zeros((size, size), np.float32)
    lumens = 3 if label != "malignant" else max(0, 2 - grade)
    for centre in rng.uniform(0.2 * size, 0.8 * size, (lumens, 2)):
        # Glands: an empty lumen ringed by nuclei, the normal architecture cancer loses.
        lumen = size * rng.uniform(0.08, 0.13)
        cv2.circle(eosin, _pt(centre), round(lumen), 0.02, -1, cv2.LINE_AA)
        for theta in np.linspace(0, 2 * np.pi, 10, endpoint=False):
            rim = centre + (lumen + 2 * scale) * np.array([math.cos(theta), math.sin(theta)])
            _draw_nucleus(haem, rim, radius * scale, spread * 0.5, rng)
    # Malignant nuclei crowd around a few clusters; benign and normal ones are scattered.
    clusters = rng.uniform(0, size, (1 + grade, 2))
    for _ in range(round(count * scale * scale)):
        if label == "malignant" and rng.random() < 0.7:
            centre = clusters[rng.integers(len(clusters))] + rng.normal(0, size * 0.12, 2)
        else:
            centre = rng.uniform(0, size, 2)
        _draw_nucleus(haem, centre, radius * scale, spread, rng)
    haem = cv2.GaussianBlur(haem, (0, 0), 0.7 * scale)
    density = strength * (haem[..., None] * stains[0] + eosin[..., None] * stains[1])
    rgb = 255.0 * np.exp(-density) + rng.normal(0.0, noise, density.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _pt(xy: np.ndarray) -> tuple[int, int]:
    return round(float(xy[0])), round(float(xy[1]))


def _draw_nucleus(haem: np.ndarray, centre: np.ndarray, radius: float, spread: float,
                  rng: np.random.Generator) -> None:
    r = max(1.5, radius + spread * rng.normal())
    axes = (max(1, round(r)), max(1, round(r * rng.uniform(0.65, 1.0))))
    darkness = rng.uniform(0.9, 1.4)
    cv2.ellipse(haem, _pt(centre), axes, float(rng.uniform(0, 180)), 0, 360, darkness, -1,
                cv2.LINE_AA)
