"""Dataset sources, one registered class per layout on disk (MIAS, CBIS-DDSM, BreakHis...).

Each built-in is imported here by name, which registers it; a new source is one file with
one ``@register_source`` class (its ``name`` on the class).
"""

from radpath.data.sources import (  # noqa: F401
    bach,
    breakhis,
    camelyon16,
    camelyon17,
    cbis_ddsm,
    csv_manifest,
    folder,
    inbreast,
    mias,
    ucsb,
)
from radpath.data.sources.base import SOURCES, DatasetSource, Skipped, SourceOptions

__all__ = ["SOURCES", "DatasetSource", "Skipped", "SourceOptions"]
