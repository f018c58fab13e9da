"""The OpenAPI description of ``POST /v1/cases`` (its handler parses the form itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PAIRINGS = ("none", "true", "pseudo")
MAX_TOP_K = 20

_BINARY_LIST = {"type": "array", "items": {"type": "string", "format": "binary"}}
_ERROR = {"application/json": {"schema": {"type": "object",
                                          "properties": {"detail": {"type": "string"}}}}}
_ERRORS = ((401, "Missing or wrong bearer token"),
           (408, "The request body did not arrive in time"),
           (413, "Request, file count or image too large"),
           (415, "Not multipart, or a file that is not an image"),
           (422, "A corrupt, truncated or wrong-kind image, or a missing or bad field"),
           (503, "Busy: too many cases in progress"), (504, "The case timed out"))


def case_openapi(map_kinds: Sequence[str]) -> dict[str, Any]:
    """The multipart body and the error answers of ``POST /v1/cases``."""
    properties = {
        "mammo": {**_BINARY_LIST, "minItems": 1,
                  "description": "Mammograms of one patient: DICOM, PNG, PGM or TIFF."},
        "histo": {**_BINARY_LIST, "description": "H&E histology images (RGB), optional."},
        "pairing": {"type": "string", "enum": list(PAIRINGS), "default": "none",
                    "description": "'pseudo' when the histology is from another patient."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 3},
        "map_kind": {"type": "string", "enum": list(map_kinds), "default": "localisation"},
    }
    schema = {"type": "object", "required": ["mammo"], "properties": properties}
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}},
            "responses": {str(code): {"description": text, "content": _ERROR}
                          for code, text in _ERRORS}}
