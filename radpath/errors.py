"""The exceptions radpath raises. Each names the file, row or field at fault."""

from __future__ import annotations

from pathlib import Path


class RadpathError(Exception):
    """Base class of every error radpath raises on purpose."""


class ImageReadError(RadpathError):
    """An image file could not be read, or holds something radpath cannot use."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ManifestError(RadpathError):
    """A malformed manifest; the message names the row (1-based, header excluded) and column."""

    def __init__(self, reason: str, *, source: str | Path | None = None,
                 row: int | None = None, column: str | None = None) -> None:
        self.source = None if source is None else str(source)
        self.row = row
        self.column = column
        self.reason = reason
        parts = (self.source, row and f"row {row}", column and f"column '{column}'")
        where = [part for part in parts if part]
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class ConfigError(RadpathError):
    """A configuration value is missing or invalid: the message names the key."""
