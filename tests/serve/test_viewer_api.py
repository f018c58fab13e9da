"""What the viewer reads from the server: the run's name, thresholds, the favicon, and
full-resolution films that carry pixels only (never a DICOM identifier)."""

import base64
import io
import json
import struct

import pytest
from PIL import Image

from radpath.errors import RadpathError
from radpath.serve.state import run_name
from radpath.serve.thresholds import read_thresholds
from tests.serve.conftest import PATIENT_ID, PATIENT_NAME, dicom_bytes


def _png_chunks(data: bytes) -> list[str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        chunks.append(data[at + 4:at + 8].decode("ascii"))
        at += 12 + length
    return chunks


def _decode(url: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix):])


def test_health_gives_the_run_name_and_default_thresholds(client, tiny_run):
    body = client.get("/v1/health").json()
    assert body["model"]["name"] == f"{tiny_run.parent.name}/run" != "run"
    assert str(tiny_run.parent.parent) not in json.dumps(body)
    fused = body["thresholds"]["fused"]
    assert fused == {"threshold": 0.5, "from": "default 0.5"}


def test_favicon_is_served(client):
    for path in ("/favicon.ico", "/static/favicon.svg"):
        response = client.get(path)
        assert response.status_code == 200 and b"<svg" in response.content
    assert 'rel="icon"' in client.get("/").text


def test_full_resolution_film_carries_pixels_only(client):
    response = client.post("/v1/cases", files=[("mammo", ("exam.dcm", dicom_bytes()))])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["thresholds"]["fused"]["threshold"] == 0.5
    full = _decode(body["images"]["views"][0]["full"])
    assert Image.open(io.BytesIO(full)).size == (body["views"][0]["width"],
                                                 body["views"][0]["height"]) == (64, 64)
    images = [_decode(u) for view in body["images"]["views"] for u in view.values()]
    images += [_decode(u) for u in body["images"]["tiles"]] + [_decode(body["images"]["figure"])]
    for data in images:
        # No text, EXIF or other metadata chunk: a header value has nowhere to hide.
        assert set(_png_chunks(data)) <= {"IHDR", "IDAT", "IEND", "PLTE", "tRNS"}
        for secret in (PATIENT_NAME, PATIENT_ID, "ACC-778899", "19610203"):
            assert secret.encode() not in data


def test_thresholds_read_from_operating_points_and_metrics(tmp_path):
    points = tmp_path / "operating_points.json"
    points.write_text(json.dumps([
        {"task": "abnormality", "modality": "fused", "threshold": 0.1, "source": "validation"},
        {"task": "malignancy", "modality": "fused", "threshold": 0.37, "source": "validation"},
        {"task": "malignancy", "modality": "mammo", "threshold": 0.5,
         "source": "default 0.5"}]))
    read = read_thresholds(points)
    assert read["fused"] == {"threshold": 0.37, "from": "validation"}
    assert read["histo"] == {"threshold": 0.5, "from": "default 0.5"}
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps([{"task": "malignancy", "modality": "histo", "domain": "all",
                                    "metric": "sensitivity", "threshold": 0.2,
                                    "threshold_from": "validation"}]))
    assert read_thresholds(metrics)["histo"] == {"threshold": 0.2, "from": "validation"}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RadpathError, match=r"bad\.json"):
        read_thresholds(tmp_path / "bad.json")


def test_threshold_reaches_the_rationale(tiny_run, tmp_path, mammo_png):
    from fastapi.testclient import TestClient

    from radpath.serve import create_app

    points = tmp_path / "operating_points.json"
    points.write_text(json.dumps([{"task": "malignancy", "modality": "fused",
                                   "threshold": 0.0123, "source": "validation"}]))
    with TestClient(create_app(tiny_run, threads=1, thresholds=points)) as client:
        body = client.post("/v1/cases", files=[("mammo", ("m.png", mammo_png))]).json()
    assert body["threshold"] == {"value": 0.0123, "source": "validation"}
    assert "operating threshold 0.01 (validation)" in body["rationale"]


def test_run_name_adds_the_parent_only_for_a_default_run_folder(tmp_path):
    assert run_name(tmp_path / "exp" / "run") == "exp/run"
    assert run_name(tmp_path / "baseline-seed0") == "baseline-seed0"
