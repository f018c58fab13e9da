"""Explanations: saliency maps, suspicious regions linked to histology, figures, faithfulness.

``explain_case`` is the entry point; see ``docs/explanation-schema.md`` for its JSON.
"""

from radpath.explain.case import (
    MAP_KINDS,
    SCHEMA,
    Explanation,
    explain_case,
    validate_explanation,
    write_explanation,
)
from radpath.explain.maps import compute_maps, explaining, map_to_original

__all__ = ["MAP_KINDS", "SCHEMA", "Explanation", "compute_maps", "explain_case", "explaining",
           "map_to_original", "validate_explanation", "write_explanation"]
