"""The README's main command, run for real (shortened) on a small cohort."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from radpath.data.manifest import read_manifest
from radpath.data.splits import check_leakage
from radpath.demo import run_demo
from radpath.evaluation.summary import threshold_of
from radpath.explain.case import validate_explanation
from radpath.explain.verdict import NOT_SUSPICIOUS, SUSPICIOUS


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    # 12 patients: the smallest cohort whose test split holds both classes (an AUC).
    return out, run_demo(out, patients=12, workers=1, progress=False,
                         overrides=["optim.epochs=1"])


def test_demo_runs_every_stage(demo):
    out, result = demo
    manifest = read_manifest(result["manifest"])
    check_leakage(manifest)
    assert {r.modality for r in manifest} == {"mammo", "histo"}
    preview = np.asarray(Image.open(result["preview"]))
    assert preview.ndim == 3 and preview.std() > 10
    for adapt in ("none", "tent", "causal"):
        assert (out / "eval" / adapt / "metrics.json").is_file()
    page = result["report"].read_text()
    assert "not a result about patients" in page and "data:image/png;base64," in page


def test_summary_and_page_show_auc_with_ci_and_the_spread(demo):
    _, result = demo
    summary, page = result["summary"].read_text(), result["report"].read_text()
    assert "not a result about patients" in summary
    for modality in ("mammo", "fused"):
        assert re.search(rf"^  {modality} +AUC \S+ \[\S+, \S+\]  p min [\d.]+ max [\d.]+ "
                         rf"IQR [\d.]+", summary, re.M), summary
    for column in ("AUC", "p min", "p max", "p IQR"):
        assert f"<th>{column}</th>" in page


def test_explained_cases_follow_the_rule_and_their_rationales_agree(demo):
    out, result = demo
    rows = json.loads((out / "eval" / "none" / "metrics.json").read_text())
    threshold, _ = threshold_of(rows, "malignancy", "fused")
    folders = sorted(result["explanation"].iterdir())
    assert folders, "the demo explained no case"
    summary = result["summary"].read_text()
    assert f"Operating threshold (fused malignancy): {threshold:.3f}" in summary
    for folder in folders:
        assert folder.name in ("correct-malignant", "error")
        data = json.loads((folder / "explanation.json").read_text())
        validate_explanation(data)
        assert data["threshold"]["value"] == round(threshold, 6)
        p = data["predictions"]["fused"]
        assert f": {NOT_SUSPICIOUS if p < threshold else SUSPICIOUS};" in data["rationale"]
        if folder.name == "correct-malignant":
            assert p >= threshold
        assert data["rationale"] in summary
