"""The Python API: the same numbers as the command-line pipeline, and a light import."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

import radpath
from radpath.data.manifest import read_manifest
from radpath.errors import ImageReadError

# What `import radpath` must not pull in (open_clip's rule: the library, not the trainer).
HEAVY = ("torch", "lightning", "timm", "fastapi", "uvicorn", "radpath.cli",
         "radpath.engine.run", "radpath.serve", "radpath.api")


def test_import_radpath_stays_light():
    code = ("import sys, radpath; radpath.__version__; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_api_names_are_served_on_first_use():
    code = ("import sys, radpath; radpath.load; radpath.train; "
            "print('radpath.api' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["True", "False"]  # the API module itself imports no torch
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        radpath.nonsense  # noqa: B018


def _unit_files(manifest, unit_id):
    records = [r for r in manifest if (r.pair_id or r.patient_id) == unit_id]
    mammo = sorted((r for r in records if r.modality == "mammo"),
                   key=lambda r: (r.laterality, r.view, r.image_id))
    histo = sorted((r for r in records if r.modality == "histo"), key=lambda r: r.image_id)
    return ([r.path for r in mammo], [r.path for r in histo],
            records[0].pairing if records[0].pairing in ("true", "pseudo") else "true")


def test_predict_gives_what_evaluate_writes(tiny_run, tiny_manifest, tmp_path):
    model = radpath.load(tiny_run, cache_dir=tmp_path / "cache")
    rows = model.evaluate(tiny_manifest, tmp_path / "eval", split="val")
    assert any(r["metric"] == "auc" for r in rows)
    manifest = read_manifest(tiny_manifest)
    with open(tmp_path / "eval" / "predictions.csv") as handle:
        written = list(csv.DictReader(handle))
    assert written
    for row in written:
        mammo, histo, pairing = _unit_files(manifest, row["unit_id"])
        predicted = model.predict(mammo=mammo, histo=histo, pairing=pairing)
        for output in ("mammo", "histo", "fused"):
            if row[f"{output}_prob"]:
                assert predicted[output] == pytest.approx(float(row[f"{output}_prob"]),
                                                          abs=2e-6), (row["unit_id"], output)
            else:
                assert predicted[output] is None


def test_predict_takes_one_modality_and_refuses_none(tiny_run, case_paths, tmp_path):
    model = radpath.load(tiny_run, cache_dir=tmp_path)
    alone = model.predict(histo=case_paths["histo"][0])
    assert alone["mammo"] is None and 0 <= alone["histo"] <= 1 and 0 <= alone["fused"] <= 1
    with pytest.raises(ValueError, match="at least one"):
        model.predict()
    with pytest.raises(ValueError, match="pairing"):
        model.predict(mammo=case_paths["mammo"], pairing="maybe")
    with pytest.raises(ImageReadError):
        model.predict(mammo=[tmp_path / "missing.png"])


def test_explain_returns_what_explanation_json_holds(tiny_run, case_paths, tmp_path):
    model = radpath.load(tiny_run, cache_dir=tmp_path / "cache")
    explanation = model.explain(mammo=case_paths["mammo"], histo=case_paths["histo"],
                                top_k=2, out=tmp_path / "why")
    assert explanation == json.loads((tmp_path / "why" / "explanation.json").read_text())
    assert len(explanation["regions"]) <= 2 and explanation["rationale"]
    assert explanation["predictions"]["fused"] == pytest.approx(
        model.predict(mammo=case_paths["mammo"], histo=case_paths["histo"])["fused"],
        abs=1e-5)


@pytest.mark.slow
def test_train_returns_a_loaded_model(tiny_manifest, tmp_path):
    from tests.conftest import REPO_ROOT

    config = {"seed": 0, "optim": {"epochs": 1}}
    base = radpath.load_config(REPO_ROOT / "configs" / "tiny.yaml",
                               [f"data.cache_dir={tmp_path / 'cache'}"])
    merged = base.model_dump(mode="json")
    merged["optim"].update(config["optim"])
    model = radpath.train(merged, tiny_manifest, tmp_path / "run",
                          overrides=["algorithm.name=irm"], workers=1)
    assert model.config.algorithm.name == "irm" and model.config.optim.epochs == 1
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and model.record == record
    assert "radpath.Model" in repr(model)


@pytest.fixture(scope="module")
def case_paths(tiny_manifest):
    records = list(read_manifest(tiny_manifest))
    return {"mammo": [r.path for r in records if r.modality == "mammo"][:2],
            "histo": [r.path for r in records if r.modality == "histo"][:1]}
