"""Combine manifests, pair the modalities and split by patient, with a leakage check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from radpath.data.manifest import Manifest, read_manifest, write_manifest
from radpath.data.pairing import pair_modalities, pairing_summary
from radpath.data.splits import check_leakage, split_patients
from radpath.errors import ConfigError


def combine(manifests: Sequence[Manifest]) -> Manifest:
    """One manifest holding every record; image ids must stay unique across sources."""
    return Manifest([record for manifest in manifests for record in manifest])


def read_paired(paths: Sequence[str | Path], *, seed: int = 0) -> Manifest:
    """Read and combine manifests, pairing them unless every record is paired already."""
    if not paths:
        raise ConfigError("at least one --manifest is needed")
    return paired(combine([read_manifest(p) for p in paths]), seed=seed)


def paired(manifest: Manifest, *, seed: int = 0) -> Manifest:
    """``manifest`` itself when every record is paired already, else paired with ``seed``."""
    return manifest if all(r.pairing for r in manifest) else pair_modalities(manifest, seed=seed)


def combine_pair_split(paths: Sequence[str | Path], out: str | Path, *, seed: int = 0,
                       fractions: tuple[float, ...] = (0.7, 0.15, 0.15),
                       ) -> tuple[Manifest, dict]:
    """Read ``paths``, pair and split them, check for leakage and write ``out``."""
    combined = combine([read_manifest(p) for p in paths])
    paired = pair_modalities(combined, seed=seed)
    split = split_patients(paired, fractions=fractions, seed=seed)
    check_leakage(split)
    write_manifest(split, out)
    return split, pairing_summary(split)
