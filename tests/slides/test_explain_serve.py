"""A slide through ``radpath explain --slide`` and the service's Deep Zoom router."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from radpath.slides.catalog import ingest_slides
from tests.slides import layouts


def _cli(*args: str) -> str:
    from typer.testing import CliRunner

    from radpath.cli.main import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The CLI chain on the synthetic CAMELYON16 layout: ingest, tiles, features, train."""
    tmp = tmp_path_factory.mktemp("explain")
    root = layouts.camelyon16(tmp / "c16")
    manifest = tmp / "c16.csv"
    _cli("ingest", "camelyon16", str(root), "--out", str(manifest), "--workers", "1")
    _cli("tiles", str(manifest), "--mpp", "1", "--size", "32", "--min-tissue", "0.5",
         "--out", str(tmp / "coords"), "--workers", "1")
    _cli("features", str(manifest), "--coords", str(tmp / "coords"), "--out",
         str(tmp / "features"), "--batch-size", "16")
    _cli("train-slides", str(manifest), "--coords", str(tmp / "coords"), "--features",
         str(tmp / "features"), "--out", str(tmp / "model"), "--epochs", "40", "--lr", "3e-3",
         "--grades", "0")
    return tmp, root


def test_train_slides_scores_the_held_out_patients(trained):
    tmp, _ = trained
    metrics = json.loads((tmp / "model" / "metrics.json").read_text())
    assert (metrics["train_patients"], metrics["test_patients"]) == (4, 2)
    assert metrics["malignancy_auc"]["n"] == 2  # one normal, one tumour test slide
    hit = metrics["lesion_hit_rate"]
    assert (hit["value"], hit["n"]) == (1.0, 1) and hit["ci_low"] < 0.5  # Wilson, one lesion


def test_explain_slide_cli_writes_heatmaps_that_find_the_lesion(trained):
    tmp, root = trained
    slide = root / "testing" / "images" / "test_002.tif"
    coords = tmp / "coords" / "camelyon16-test_002.h5"
    out = tmp / "heatmaps" / "camelyon16-test_002"
    _cli("explain", "--run", str(tmp / "model"), "--slide", str(slide), "--coords", str(coords),
         "--out", str(out))
    summary = json.loads((out / "slide_explanation.json").read_text())
    assert summary["malignancy_probability"] > 0.5 and summary["encoder"] == "colour-stats"
    top = summary["top_patches"][0]
    # the lesion of test_002 is the square (200, 200)-(330, 330)
    assert 200 - 32 <= top["x"] <= 330 and 200 - 32 <= top["y"] <= 330
    overlay = np.asarray(Image.open(out / "localisation.png"))
    assert overlay.shape[2] == 4 and overlay[..., 3].max() > 0 and overlay[0, 0, 3] == 0
    assert (out / "figure.png").is_file() and (out / "attention.png").is_file()


def test_slide_router_serves_dzi_tiles_and_heatmaps(trained, tmp_path):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from radpath.serve.slides import slide_router

    tmp, root = trained
    slides_csv = tmp_path / "slides.csv"
    ingest_slides(root / "testing" / "images", slides_csv, workers=1, progress=False)
    app = FastAPI()
    app.include_router(slide_router(slides_csv, heatmaps=tmp / "heatmaps"))
    client = TestClient(app)
    listed = {s["id"]: s for s in client.get("/v1/slides").json()}
    assert listed["test_002"]["width"] == 512 and listed["test_002"]["mpp"] == 1.0
    dzi = ET.fromstring(client.get("/v1/slides/test_002.dzi").text)
    assert dzi.get("TileSize") == "254" and dzi[0].get("Width") == "512"
    tile = client.get("/v1/slides/test_002_files/9/0_0.jpeg")
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    import io

    pixels = np.asarray(Image.open(io.BytesIO(tile.content)))
    assert pixels.shape == (255, 255, 3) and pixels.mean() < 240  # tissue, not blank
    assert client.get("/v1/slides/test_002_files/9/9_9.jpeg").status_code == 404
    assert client.get("/v1/slides/nope.dzi").status_code == 404
    assert client.get("/v1/slides/test_001/heatmaps/attention.png").status_code == 404
    assert client.get("/slides").status_code == 200
