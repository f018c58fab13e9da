"""UCSB Bio-Segmentation breast cancer images: ``ytmaBB_MMDDYY_{benign|malignant}K_ccd.tif``.

BB is the tissue-microarray block and MMDDYY the scan date; together they name one
staining and scanning batch, the default domain. The source gives no patient ids, so each
image is its own case (patient id = image id).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from radpath.data.manifest import Record
from radpath.data.sources.base import DatasetSource, Skipped, image_files, register_source

_NAME = re.compile(r"^ytma(\d+)_(\d{6})_(benign|malignant)(\d+)_ccd$", re.IGNORECASE)


@register_source
class UcsbSource(DatasetSource):
    """UCSB breast cancer TMA images (TIFF)."""

    name = "ucsb"

    modality = "histo"

    def scan(self) -> Iterator[Record | Skipped]:
        for path in image_files(self.root, (".tif", ".tiff", ".png")):
            match = _NAME.match(path.stem)
            if match is None:
                yield Skipped(str(path), "file name does not follow the UCSB convention "
                              "ytmaBB_MMDDYY_{benign|malignant}K_ccd")
                continue
            block, date, label, _index = match.groups()
            image_id = f"ucsb-{path.stem}"
            yield Record(
                image_id=image_id,
                patient_id=image_id,
                modality="histo",
                path=str(path.resolve()),
                label=label.lower(),
                domain=self.options.domain or f"ytma{block}_{date}",
                source="ucsb",
            )
