"""BreakHis: H&E images named ``SOB_{B|M}_{TYPE}-{YY}-{SLIDE}-{MAG}-{SEQ}.png``.

The numeric part of SLIDE identifies the patient (``22549AB`` and ``22549CD`` are two
slides of patient 22549). Magnification (40, 100, 200, 400) is the default domain: each
is a different optical set-up, the shift radpath's domain generalisation must survive.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from radpath.data.manifest import Record
from radpath.data.sources.base import (
    DatasetSource,
    Skipped,
    image_files,
    register_source,
)

SUBTYPES = {
    "A": "adenosis", "F": "fibroadenoma", "PT": "phyllodes_tumor", "TA": "tubular_adenoma",
    "DC": "ductal_carcinoma", "LC": "lobular_carcinoma", "MC": "mucinous_carcinoma",
    "PC": "papillary_carcinoma",
}
_NAME = re.compile(r"^SOB_([BM])_([A-Z]+)-(\d+)-(\d+)([A-Z]*)-(\d+)-(\d+)$")


@register_source
class BreakHisSource(DatasetSource):
    """BreakHis images found anywhere under the root (its folder tree or a flat folder)."""

    name = "breakhis"

    modality = "histo"

    def scan(self) -> Iterator[Record | Skipped]:
        for path in image_files(self.root, (".png", ".jpg", ".jpeg", ".tif", ".tiff")):
            match = _NAME.match(path.stem)
            if match is None:
                yield Skipped(str(path), "file name does not follow the BreakHis convention "
                              "SOB_{B|M}_{TYPE}-{YY}-{SLIDE}-{MAG}-{SEQ}")
                continue
            severity, kind, _year, patient, _slide_letters, magnification, _seq = match.groups()
            if kind not in SUBTYPES:
                yield Skipped(str(path), f"unknown BreakHis tumour type {kind!r}; expected one "
                              f"of {', '.join(SUBTYPES)}")
                continue
            yield Record(
                image_id=path.stem,
                patient_id=f"breakhis-{patient}",
                modality="histo",
                path=str(path.resolve()),
                label="malignant" if severity == "M" else "benign",
                domain=self.options.domain or f"{magnification}x",
                magnification=magnification,
                subtype=SUBTYPES[kind],
                source="breakhis",
            )
