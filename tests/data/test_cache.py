"""Tests of the content-addressed array cache: hits, misses, damage and atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel

from radpath.data.cache import ArrayCache, ArrayMemory


class _Config(BaseModel):
    size: int = 64
    normalise: str = "percentile"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "image.bin"
    path.write_bytes(b"pixels-one")
    return path


@pytest.fixture
def cache(tmp_path: Path) -> ArrayCache:
    return ArrayCache(tmp_path / "cache")


def test_put_then_get_is_a_hit(cache: ArrayCache, source: Path) -> None:
    key = cache.key(source, _Config())
    assert cache.get(key) is None
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = cache.put(key, array)
    assert path.parent.name == key[:2]
    np.testing.assert_array_equal(cache.get(key), array)


def test_key_changes_with_config_and_content(cache: ArrayCache, source: Path) -> None:
    key = cache.key(source, _Config())
    assert cache.key(source, {"size": 64, "normalise": "percentile"}) == key
    assert cache.key(source, _Config(size=32)) != key
    source.write_bytes(b"pixels-two")  # same size: only the mtime tells the memo apart
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert cache.key(source, _Config()) != key


def test_key_ignores_the_file_name(cache: ArrayCache, source: Path, tmp_path: Path) -> None:
    copy = tmp_path / "renamed.bin"
    copy.write_bytes(source.read_bytes())
    assert cache.key(copy, _Config()) == cache.key(source, _Config())


def test_truncated_entry_is_a_miss_and_removed(cache: ArrayCache, source: Path) -> None:
    key = cache.key(source, _Config())
    path = cache.put(key, np.ones((64, 64), np.float32))
    path.write_bytes(path.read_bytes()[:200])
    assert cache.get(key) is None
    assert not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    assert cache.get(key) is None


def test_leftover_temp_file_does_not_break_get(cache: ArrayCache, source: Path) -> None:
    key = cache.key(source, _Config())
    shard = cache.entry_path(key).parent
    shard.mkdir(parents=True)
    (shard / f".{key}.npy.abc123.tmp").write_bytes(b"half-written")
    assert cache.get(key) is None
    cache.put(key, np.zeros(3))
    np.testing.assert_array_equal(cache.get(key), np.zeros(3))


def test_get_or_compute_computes_once(cache: ArrayCache, source: Path) -> None:
    calls = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.full((2, 2), 7, np.uint8)

    first = cache.get_or_compute(source, _Config(), compute)
    second = cache.get_or_compute(source, _Config(), compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)


def test_dict_of_arrays_round_trip(cache: ArrayCache, source: Path) -> None:
    key = cache.key(source, _Config())
    assert cache.get_arrays(key) is None
    cache.put_arrays(key, {"image": np.ones((4, 4)), "mask": np.zeros((4, 4), bool)})
    arrays = cache.get_arrays(key)
    assert arrays is not None and set(arrays) == {"image", "mask"}
    assert arrays["mask"].dtype == bool
    cache.entry_path(key, ".npz").write_bytes(b"PK\x03\x04 broken")
    assert cache.get_arrays(key) is None


def test_bad_key_is_refused(cache: ArrayCache) -> None:
    with pytest.raises(ValueError, match="not a cache key"):
        cache.get("../../etc/passwd")


def _arrays(nbytes: int, fill: int = 0) -> dict[str, np.ndarray]:
    return {"image": np.full(nbytes, fill, dtype=np.uint8)}


def test_memory_keeps_entries_read_only_and_drops_the_oldest_over_its_limit() -> None:
    memory = ArrayMemory(limit_bytes=250)
    for key in ("a", "b"):
        memory.put(key, _arrays(100, ord(key)))
    kept = memory.get("a")
    assert kept is not None and kept["image"][0] == ord("a")
    with pytest.raises(ValueError, match="read-only"):
        kept["image"][0] = 0
    memory.put("c", _arrays(100))  # 300 bytes would exceed 250: "a", the oldest, goes
    assert memory.get("a") is None and memory.get("b") is not None and memory.get("c") is not None
    assert len(memory) == 2 and memory.used_bytes == 200
    memory.put("huge", _arrays(251))  # larger than the limit: not kept, nothing dropped
    assert memory.get("huge") is None and len(memory) == 2
    off = ArrayMemory(limit_bytes=0)
    off.put("a", _arrays(1))
    assert off.get("a") is None and len(off) == 0
