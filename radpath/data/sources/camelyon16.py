"""CAMELYON16 (sentinel lymph-node WSIs, tumour / normal, with lesion outlines).

The published layout::

    training/normal/normal_001.tif ...       training/tumor/tumor_001.tif ...
    training/lesion_annotations/tumor_001.xml   (ASAP XML; lesion_annotations.zip unpacked)
    testing/images/test_001.tif ...
    testing/reference.csv                       (test_001,Tumor,Macro,...  or  ...,Normal)
    testing/lesion_annotations/test_001.xml

Both centres (Radboud UMC and UMC Utrecht) are mixed in the public release without a
per-slide centre, so the domain is ``camelyon16`` unless ``--domain`` says otherwise. Each
slide is its own patient. The lesion outlines go to the manifest as enclosing circles
(``kind`` ``tumour``); the polygons themselves are read from the XML by
``radpath.data.asap`` for localisation supervision and the lesion-level hit rate.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from radpath.data.manifest import Lesion, Record
from radpath.data.sources.base import DatasetSource, Skipped, register_source
from radpath.errors import RadpathError

_LABELS = {"normal": "normal", "tumor": "malignant"}


def annotation_path(slide: Path) -> Path | None:
    """The ASAP XML of a CAMELYON slide, when it has one (beside its folder or the images')."""
    for folder in (slide.parent.parent / "lesion_annotations", slide.parent / "lesion_annotations",
                   slide.parent):
        candidate = folder / f"{slide.stem}.xml"
        if candidate.is_file():
            return candidate
    return None


def lesion_circles(xml: Path | None) -> tuple[Lesion, ...]:
    """Each tumour outline of ``xml`` as its enclosing circle (centre of the bounding box)."""
    if xml is None:
        return ()
    from radpath.data.asap import lesions, read_asap_xml

    circles = []
    for polygon in lesions(read_asap_xml(xml)):
        x0, y0, x1, y1 = polygon.bounds()
        circles.append(Lesion((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) / 2,
                              "tumour"))
    return tuple(circles)


def slide_problem(path: Path) -> str:
    """Why a whole slide cannot be opened ("" when it can): metadata only, no pixels."""
    from radpath.data.wsi import Slide

    try:
        with Slide(path) as slide:
            slide.require_mpp()
    except RadpathError as exc:
        return str(exc)
    return ""


def _test_labels(root: Path) -> dict[str, str]:
    reference = root / "testing" / "reference.csv"
    if not reference.is_file():
        return {}
    with reference.open(newline="", encoding="utf-8") as handle:
        return {row[0].strip(): row[1].strip().lower() for row in csv.reader(handle) if row}


@register_source
class Camelyon16Source(DatasetSource):
    """CAMELYON16 whole slides: training/{normal,tumor}, testing/images + reference.csv."""

    name = "camelyon16"

    modality = "histo"
    verify_pixels = False  # a slide is opened (metadata) while scanning, never decoded whole

    def scan(self) -> Iterator[Record | Skipped]:
        tests = _test_labels(self.root)
        found = sorted(self.root.glob("training/*/*.tif")) + sorted(
            self.root.glob("testing/images/*.tif"))
        if not found:
            yield Skipped(str(self.root), "no CAMELYON16 slides (expected training/normal/*.tif,"
                          " training/tumor/*.tif or testing/images/*.tif)")
        for slide in found:
            folder = slide.parent.name.lower()
            raw = tests.get(slide.stem, "") if folder == "images" else folder
            label = _LABELS.get(raw)
            if label is None:
                why = (f"no label in testing/reference.csv for {slide.stem}" if folder == "images"
                       else f"folder {slide.parent.name!r} is neither normal nor tumor")
                yield Skipped(str(slide), why)
                continue
            problem = slide_problem(slide)
            try:
                circles = lesion_circles(annotation_path(slide))
            except RadpathError as exc:
                problem = problem or str(exc)
            if problem:
                yield Skipped(str(slide), problem)
                continue
            yield Record(image_id=f"camelyon16-{slide.stem}", patient_id=f"camelyon16-{slide.stem}",
                         modality="histo", path=str(slide.resolve()), label=label,
                         domain=self.options.domain or "camelyon16", source="camelyon16",
                         split="test" if folder == "images" else "", lesions=circles)
