"""A content-addressed on-disk cache of preprocessed arrays.

The key hashes the *content* of the source image (not its name) together with the
preprocessing config and the cache format version, so renaming a file keeps its entry and
editing a file or a setting misses. Entries are written atomically (temporary file, then
rename) and a damaged entry is removed and treated as a miss: a crash mid-write costs one
recomputation, never a wrong array.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from radpath.atomic import atomic_path

# Bump when the on-disk layout or the meaning of a key changes: old entries then miss.
CACHE_FORMAT_VERSION = "1"
CHUNK_BYTES = 1 << 20
_KEY_PATTERN = re.compile(r"[0-9a-f]{64}")

# Digests of source files, memoised per (path, size, mtime_ns) for this process. A file
# rewritten with the same size inside one mtime tick would be missed; editors and copies
# change one or the other in practice.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()
# Errors np.load raises on a truncated or garbled file.
_CORRUPT = (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's content, read in 1 MiB chunks and memoised per size and mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _DIGESTS_LOCK:
        if memo_key in _DIGESTS:
            return _DIGESTS[memo_key]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    with _DIGESTS_LOCK:
        _DIGESTS[memo_key] = digest.hexdigest()
    return digest.hexdigest()


def canonical_config(config: BaseModel | Mapping[str, Any]) -> str:
    """The config as sorted, compact JSON, with the cache format version included."""
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    payload = {"cache_format": CACHE_FORMAT_VERSION, "config": data}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


class ArrayCache:
    """Preprocessed arrays on disk, sharded into subfolders by the first two key digits.

    Args:
        root: the cache folder (created on first write).
        fsync: flush each entry to disk before renaming it into place; slower, but an entry
            then survives a power cut as well as a crash.
    """

    def __init__(self, root: str | Path, *, fsync: bool = False) -> None:
        self.root = Path(root)
        self.fsync = fsync

    def key(self, path: str | Path, config: BaseModel | Mapping[str, Any]) -> str:
        """The cache key of ``path`` preprocessed with ``config`` (64 hex digits)."""
        text = f"{file_digest(path)}\n{canonical_config(config)}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def entry_path(self, key: str, suffix: str = ".npy") -> Path:
        """Where the entry of ``key`` lives."""
        if not _KEY_PATTERN.fullmatch(key):
            raise ValueError(f"not a cache key (64 lowercase hex digits): {key!r}")
        return self.root / key[:2] / f"{key}{suffix}"

    def get(self, key: str) -> np.ndarray | None:
        """The cached array, or ``None`` on a miss (a damaged entry is removed)."""
        path = self.entry_path(key)
        try:
            return np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except _CORRUPT:
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, array: np.ndarray) -> Path:
        """Store ``array`` under ``key`` atomically; returns the entry's path."""
        path = self.entry_path(key)
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.save(handle, np.asarray(array), allow_pickle=False)
            self._flush(handle)
        return path

    def get_arrays(self, key: str) -> dict[str, np.ndarray] | None:
        """The cached dict of arrays (e.g. image and mask), or ``None`` on a miss."""
        path = self.entry_path(key, ".npz")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except FileNotFoundError:
            return None
        except _CORRUPT:
            path.unlink(missing_ok=True)
            return None

    def put_arrays(self, key: str, arrays: Mapping[str, np.ndarray]) -> Path:
        """Store a dict of named arrays under ``key`` atomically (one ``.npz`` file)."""
        path = self.entry_path(key, ".npz")
        with atomic_path(path) as tmp, tmp.open("wb") as handle:
            np.savez(handle, **{name: np.asarray(a) for name, a in arrays.items()})
            self._flush(handle)
        return path

    def get_or_compute(self, path: str | Path, config: BaseModel | Mapping[str, Any],
                       compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached array of ``path`` under ``config``, computing and storing it on a miss."""
        key = self.key(path, config)
        cached = self.get(key)
        if cached is not None:
            return cached
        array = compute()
        if not isinstance(array, np.ndarray):
            raise TypeError(f"compute() must return a numpy array, got {type(array).__name__}")
        self.put(key, array)
        return array

    def _flush(self, handle: Any) -> None:
        if self.fsync:
            handle.flush()
            os.fsync(handle.fileno())


class ArrayMemory:
    """Cache entries already read, kept in this process up to ``limit_bytes``.

    Training reads every unit's arrays again each epoch; reading and unpacking the ``.npz``
    entries was 40% of the data loading of ``configs/real-cpu.yaml``. Entries are kept
    read-only (a caller that wrote into one would change every later epoch) and dropped
    oldest first once the limit is reached; an entry larger than the limit is not kept.
    Each DataLoader worker process holds its own.

    Args:
        limit_bytes: the most array bytes kept; 0 keeps nothing.
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0
        self._entries: dict[str, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        return self._entries.get(key)

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        size = sum(a.nbytes for a in arrays.values())
        if key in self._entries or size > self.limit_bytes:
            return
        while self._entries and self.used_bytes + size > self.limit_bytes:
            oldest = next(iter(self._entries))
            self.used_bytes -= sum(a.nbytes for a in self._entries.pop(oldest).values())
        for array in arrays.values():
            array.flags.writeable = False
        self._entries[key] = arrays
        self.used_bytes += size
