"""CAMELYON17 (five lymph-node slides per patient, five centres, pN stage per patient).

The published layout::

    training/center_0/patient_000_node_0.tif ... (center_0 .. center_4)
    training/stage_labels.csv  (patient,stage: patient_000.zip,pN0 ; patient_000_node_0.tif,itc)
    training/lesion_annotations/patient_004_node_4.xml   (ASAP XML, group "metastases")

One record per slide; the patient is the bag (``radpath.slides.bags`` gathers a patient's
five slides). The centre is the domain. ``grade`` is the patient's pN stage as an ordinal
for the grading head: pN0 0, pN0(i+) 1, pN1mi 2, pN1 3, pN2 4. A slide is ``malignant``
when it holds a metastasis of any size (macro, micro or isolated tumour cells), else
``normal``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from radpath.data.manifest import Record
from radpath.data.sources.base import DatasetSource, Skipped, register_source
from radpath.data.sources.camelyon16 import annotation_path, lesion_circles, slide_problem
from radpath.errors import RadpathError

PN_STAGES = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")
SLIDE_LABELS = {"negative": "normal", "itc": "malignant", "micro": "malignant",
                "macro": "malignant"}
_NAME = re.compile(r"^(patient_\d+)_node_(\d+)$")


def read_stage_labels(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(patient -> pN stage, slide stem -> slide label)`` of ``stage_labels.csv``."""
    patients, slides = {}, {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            name, stage = (row.get("patient") or "").strip(), (row.get("stage") or "").strip()
            if name.endswith(".zip"):
                patients[name[:-4]] = stage
            elif name.endswith(".tif"):
                slides[name[:-4]] = stage.lower()
    return patients, slides


@register_source
class Camelyon17Source(DatasetSource):
    """CAMELYON17 whole slides, patient bags of five nodes, pN stage as the grade."""

    name = "camelyon17"

    modality = "histo"
    verify_pixels = False  # a slide is opened (metadata) while scanning, never decoded whole

    def scan(self) -> Iterator[Record | Skipped]:
        labels = next(iter(sorted(self.root.rglob("stage_labels.csv"))), None)
        patients, slide_labels = read_stage_labels(labels) if labels else ({}, {})
        slides = sorted(self.root.rglob("center_*/patient_*_node_*.tif"))
        if not slides:
            yield Skipped(str(self.root), "no CAMELYON17 slides (expected "
                          "center_N/patient_XXX_node_Y.tif)")
        for slide in slides:
            match = _NAME.match(slide.stem)
            if match is None:
                yield Skipped(str(slide), "name is not patient_XXX_node_Y")
                continue
            patient = match.group(1)
            stage = patients.get(patient, "")
            if stage and stage not in PN_STAGES:
                yield Skipped(str(slide), f"pN stage {stage!r} of {patient} is not one of "
                              f"{', '.join(PN_STAGES)}")
                continue
            raw = slide_labels.get(slide.stem, "")
            if raw and raw not in SLIDE_LABELS:
                yield Skipped(str(slide), f"slide label {raw!r} is not one of "
                              f"{', '.join(SLIDE_LABELS)}")
                continue
            problem = slide_problem(slide)
            try:
                circles = lesion_circles(annotation_path(slide))
            except RadpathError as exc:
                problem = problem or str(exc)
            if problem:
                yield Skipped(str(slide), problem)
                continue
            yield Record(image_id=f"camelyon17-{slide.stem}", patient_id=f"camelyon17-{patient}",
                         modality="histo", path=str(slide.resolve()),
                         label=SLIDE_LABELS.get(raw, ""),
                         grade=str(PN_STAGES.index(stage)) if stage else "",
                         domain=self.options.domain or slide.parent.name, source="camelyon17",
                         lesions=circles, subtype=raw)
