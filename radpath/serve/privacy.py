"""What keeps identifiers and server paths out of answers and logs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from radpath.errors import ImageReadError


def identifiers(files: dict[str, list[tuple[Path, str]]]) -> list[str]:
    """Identifying DICOM tag values of the uploads (and a person name's parts), to scrub."""
    from radpath.data.io import IDENTIFYING_TAGS, read_dicom_header

    found: set[str] = set()
    for paths in files.values():
        for path, _ in paths:
            try:
                header = read_dicom_header(path)
            except ImageReadError:
                continue  # not DICOM (or unreadable: then nothing of it is shown)
            for keyword in IDENTIFYING_TAGS:
                try:
                    value = str(header.get(keyword, "") or "")
                except Exception:  # a malformed value: it cannot be shown either
                    continue
                found.update(part for part in (value, *re.split(r"[\^=]", value))
                             if len(part.strip()) >= 3)
    return sorted(found, key=len, reverse=True)


def scrub(text: str, values: Sequence[str]) -> str:
    for value in values:
        text = text.replace(value, "<redacted>")
    return text


def unpath(text: str, names: dict[str, str], folder: Path) -> str:
    """Server paths of the uploads replaced by the client's sanitised names."""
    for path, name in names.items():
        text = text.replace(path, name)
    return text.replace(str(folder), "<upload>")


def walk_strings(value: Any, clean: Callable[[str], str]) -> Any:
    """Apply ``clean`` to every string; non-finite floats become None (strict JSON)."""
    if isinstance(value, str):
        return value if value.startswith("data:image/png;base64,") else clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): walk_strings(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [walk_strings(v, clean) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def safe_name(raw: str | None, index: int) -> str:
    """The client's file base name, reduced to ``[A-Za-z0-9._-]`` and 80 characters."""
    base = re.split(r"[\\/]", raw or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or f"upload-{index + 1}"
    if len(base) > 80:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[:70] + dot + suffix[:9]) if dot and len(suffix) <= 9 else base[:80]
    return base
