"""Small synthetic CAMELYON16 / CAMELYON17 layouts (real pyramidal TIFFs, ASAP XML) for
tests and demos: never a result about patients."""

from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from radpath.slides.synthetic import write_pyramidal_tiff

SIDE = 512
PINK, PURPLE = (215, 140, 190), (110, 60, 150)


def slide_pixels(seed: int, tumour: list[np.ndarray]) -> np.ndarray:
    """Glass with a pink tissue disc; tumour polygons painted purple."""
    rng = np.random.default_rng(seed)
    image = np.full((SIDE, SIDE, 3), 242, np.uint8)
    cv2.circle(image, (SIDE // 2, SIDE // 2), SIDE // 2 - 30, PINK, -1)
    for polygon in tumour:
        cv2.fillPoly(image, [polygon.astype(np.int32)], PURPLE)
    tissue = image[..., 0] < 240
    noise = rng.integers(-12, 12, image.shape)
    image[tissue] = np.clip(image[tissue] + noise[tissue], 0, 255).astype(np.uint8)
    return image


def asap_xml(path: Path, polygons: list[np.ndarray], group: str = "_0") -> None:
    body = []
    for i, polygon in enumerate(polygons):
        coords = "".join(f'<Coordinate Order="{j}" X="{x:.1f}" Y="{y:.1f}"/>'
                         for j, (x, y) in enumerate(polygon))
        body.append(f'<Annotation Name="Annotation {i}" Type="Polygon" PartOfGroup="{group}" '
                    f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('<?xml version="1.0"?><ASAP_Annotations><Annotations>' + "".join(body)
                    + '</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" '
                    'Color="#ff0000"><Attributes/></Group></AnnotationGroups></ASAP_Annotations>')


def square(x: float, y: float, side: float) -> np.ndarray:
    return np.array([(x, y), (x + side, y), (x + side, y + side), (x, y + side)], float)


def _slide(path: Path, seed: int, tumour: list[np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pyramidal_tiff(slide_pixels(seed, tumour), path, mpp=1.0, tile=128, min_side=64)


def camelyon16(root: Path) -> Path:
    """2 normal + 2 tumour training slides (with XML), 2 test slides and reference.csv."""
    tumours = {"tumor_001": [square(150, 150, 140)],
               "tumor_002": [square(120, 260, 120), square(300, 130, 100)],
               "test_002": [square(200, 200, 130)]}
    for name in ("normal_001", "normal_002"):
        _slide(root / "training" / "normal" / f"{name}.tif", zlib.crc32(name.encode()) % 9, [])
    for name in ("tumor_001", "tumor_002"):
        _slide(root / "training" / "tumor" / f"{name}.tif", zlib.crc32(name.encode()) % 9,
               tumours[name])
        asap_xml(root / "training" / "lesion_annotations" / f"{name}.xml", tumours[name])
    _slide(root / "testing" / "images" / "test_001.tif", 5, [])
    _slide(root / "testing" / "images" / "test_002.tif", 6, tumours["test_002"])
    asap_xml(root / "testing" / "lesion_annotations" / "test_002.xml", tumours["test_002"])
    (root / "testing" / "reference.csv").write_text(
        "test_001,Normal,,\ntest_002,Tumor,Macro,\n")
    return root


def camelyon17(root: Path) -> Path:
    """Two patients of five nodes each in two centres: pN0 and pN1 (two nodes with macro)."""
    rows = ["patient,stage"]
    for patient, centre, stage, positive in ((0, 0, "pN0", ()), (1, 1, "pN1", (1, 3))):
        rows.append(f"patient_{patient:03d}.zip,{stage}")
        for node in range(5):
            name = f"patient_{patient:03d}_node_{node}"
            tumour = [square(180, 180, 150)] if node in positive else []
            _slide(root / "training" / f"center_{centre}" / f"{name}.tif", node, tumour)
            rows.append(f"{name}.tif,{'macro' if tumour else 'negative'}")
            if tumour:
                asap_xml(root / "training" / "lesion_annotations" / f"{name}.xml", tumour,
                         group="metastases")
    (root / "training" / "stage_labels.csv").write_text("\n".join(rows) + "\n")
    return root
