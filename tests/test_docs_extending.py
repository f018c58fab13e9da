"""The worked examples of docs/extending.md, run as written: each registers and works."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import radpath
from tests.conftest import REPO_ROOT
from tests.test_docs import code_blocks

EXTENDING = REPO_ROOT / "docs" / "extending.md"


@pytest.fixture(scope="module")
def examples() -> dict:
    """The page's Python blocks executed once (the registries refuse a second time)."""
    namespace: dict = {}
    blocks = code_blocks(EXTENDING, "python")
    assert len(blocks) == 3
    for block in blocks:
        exec(compile(block, str(EXTENDING), "exec"), namespace)
    return namespace


def test_the_new_algorithm_adds_its_term(examples, tiny_config, tiny_manifest):
    from radpath.batch.collate import collate_patients
    from radpath.batch.dataset import PatientBagDataset
    from radpath.engine.run import build_algorithm, prepare_manifest

    config = tiny_config("algorithm.name=feature_spread")
    manifest = prepare_manifest([tiny_manifest], config)
    dataset = PatientBagDataset(manifest, config.data, split="train", train=True)
    algorithm = build_algorithm(config, dataset.domains, dataset.num_grades)
    assert isinstance(algorithm, examples["FeatureSpread"])
    logs = algorithm.update(collate_patients([dataset[i] for i in range(len(dataset))]))
    assert logs["feature_spread"] > 0  # several domains in the batch: a real spread


def test_the_new_adapter_adapts_a_copy(examples, tiny_run, tiny_manifest, tmp_path):
    model = radpath.load(tiny_run, cache_dir=tmp_path / "cache")
    before = {k: v.clone() for k, v in model._run.algorithm.state_dict().items()}
    rows = model.evaluate(tiny_manifest, tmp_path / "eval", split="val", adapt="fused_tent")
    assert any(r["metric"] == "auc" and r["modality"] == "fused" for r in rows)
    after = model._run.algorithm.state_dict()
    assert all(np.array_equal(before[k].numpy(), after[k].numpy()) for k in before)


def test_the_new_dataset_source_ingests_and_skips(examples, tmp_path):
    from radpath.data.ingest import ingest

    rng = np.random.default_rng(0)
    for name in ("p1_malignant_0", "p2_benign_0", "p3_unsure_0"):
        pixels = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
    report = ingest("by-name", tmp_path, tmp_path / "out" / "mine.csv", workers=1,
                    progress=False)
    assert sorted((r.patient_id, r.label) for r in report.records) == [
        ("p1", "malignant"), ("p2", "benign")]
    assert [s.reason for s in report.skipped] == [
        "expected PATIENT_LABEL_N with a known label"]
