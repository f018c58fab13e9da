"""The helpers of benchmarks/synthetic_lodo.py and benchmarks/tta_nuisance.py (the runs
themselves take minutes; their tables are in benchmarks/results/)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from radpath.data.manifest import read_manifest
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from tests.conftest import load_benchmark


def _row(seed, algorithm, auc, p=None, modality="mammo"):
    return {"seed": seed, "algorithm": algorithm, "adaptation": "none", "modality": modality,
            "unseen": {"value": auc}, "in_domain": {"value": 0.9}, "delong_p_vs_erm": p}


def test_lodo_summary_counts_significant_seeds_by_direction() -> None:
    lodo = load_benchmark("synthetic_lodo")
    rows = lodo.with_erm_unseen([
        _row(0, "erm", 0.2), _row(1, "erm", 0.4),
        _row(0, "irm", 0.9, p=0.001), _row(1, "irm", 0.3, p=0.01)])
    lines = lodo.summary_table(rows)
    irm = next(line for line in lines if line.startswith("| irm |"))
    assert "0.600 ± 0.424" in irm and "0.90, 0.30" in irm
    assert irm.endswith("| 1 / 1 |")
    erm = next(line for line in lines if line.startswith("| erm |"))
    assert erm.endswith("| – |")


def test_the_shortcut_cohort_reverses_at_the_held_out_site(tmp_path) -> None:
    lodo = load_benchmark("synthetic_lodo")
    config = lodo.cohort_config(shortcut=True).model_copy(update={"mammo_size": 64,
                                                                  "tile_size": 32})
    from radpath.data.synthetic import _plan_patients

    patients = _plan_patients(config)
    for site, shortcut, cause in ((0, 0.1, 1.0), (1, 0.9, 0.75), (2, 0.8, 0.75)):
        chosen = [p for p in patients if p.domain == site]
        noisy = np.mean([(p.recorded_label == "malignant") == p.noisy for p in chosen])
        assert abs(noisy - shortcut) < 0.15, (site, noisy)
        right = np.mean([p.recorded_label == p.label for p in chosen])
        assert abs(right - cause) < 0.15, (site, right)
    assert not any(p.noisy for p in _plan_patients(lodo.cohort_config(shortcut=False)))


def test_corrupted_manifest_rewrites_only_its_modality(tmp_path) -> None:
    tta = load_benchmark("tta_nuisance")
    manifest = read_manifest(make_synthetic_cohort(
        tmp_path / "cohort", SyntheticConfig(n_patients=6, mammo_size=64, tile_size=32,
                                             domains=2)))
    shifted = tta.corrupted(manifest, "window", 5, tmp_path / "shifted", seed=0)
    assert [r.image_id for r in shifted] == [r.image_id for r in manifest]
    for before, after in zip(manifest, shifted, strict=True):
        if before.modality == "histo":
            assert after == before
            continue
        assert after.path != before.path and after.label == before.label
        old, new = np.asarray(Image.open(before.path)), np.asarray(Image.open(after.path))
        assert new.dtype == old.dtype and new.shape == old.shape  # 8- and 16-bit kept
        assert new.max() == np.iinfo(old.dtype).max and not np.array_equal(new, old)
