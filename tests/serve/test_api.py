"""The HTTP API: a real case end to end, authentication, limits, refusals and privacy."""

from __future__ import annotations

import base64
import io
import json
import logging
import time

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import (
    PATIENT_ID,
    PATIENT_NAME,
    dicom_bytes,
    histology,
    mammogram,
    png,
)


def _decode(data_url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix):])))


def _refused(client, response, status: int, *words: str) -> str:
    """The response is ``status`` with a JSON detail holding ``words``; the server still serves."""
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    for word in words:
        assert word in detail, detail
    assert client.get("/v1/health").json()["status"] == "ok"
    return detail


def test_health_names_the_model_without_paths(client, tiny_run):
    response = client.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    model = body["model"]
    assert model["algorithm"] == "erm" and model["backbone"] == "vit_test"
    assert model["pairing_mode"] and model["git_commit"] and model["run"] == tiny_run.name
    assert str(tiny_run.parent) not in response.text


def test_case_with_mammogram_and_histology(client, mammo_png, histo_png):
    response = client.post("/v1/cases", files=[("mammo", ("left cc.png", mammo_png)),
                                                ("histo", ("../../tile.png", histo_png))],
                           data={"pairing": "pseudo"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schema"] == "radpath.explanation/1"
    assert set(body["predictions"]) >= {"mammo", "histo", "fused"}
    for value in body["predictions"].values():
        assert 0.0 <= value <= 1.0
    assert body["regions"] and body["regions"][0]["rank"] == 1
    assert body["tiles"] and body["rationale"]
    assert body["inputs"] == {"mammo": ["left_cc.png"], "histo": ["tile.png"]}
    view = body["images"]["views"][0]
    base, heat = _decode(view["base"]), _decode(view["heatmap"])
    assert heat.mode == "RGBA" and heat.size == base.size
    assert len(body["images"]["tiles"]) == len(body["tiles"])
    assert _decode(body["images"]["figure"]).size
    assert "/tmp" not in response.text and "radpath-case-" not in response.text


def test_mammogram_alone_is_a_case(client, mammo_png):
    response = client.post("/v1/cases", files=[("mammo", ("a.png", mammo_png)),
                                                ("mammo", ("b.png", png(mammogram(seed=5))))])
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["predictions"]["mammo"] <= 1.0
    assert len(body["images"]["views"]) == 2 and body["images"]["tiles"] == []


def test_token_guards_cases_but_not_health(tiny_run, mammo_png):
    from fastapi.testclient import TestClient

    from radpath.serve import create_app

    with TestClient(create_app(tiny_run, token="s3cret", threads=1)) as guarded:
        files = [("mammo", ("m.png", mammo_png))]
        assert guarded.get("/v1/health").status_code == 200
        missing = guarded.post("/v1/cases", files=files)
        assert missing.status_code == 401 and "Bearer" in missing.json()["detail"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = guarded.post("/v1/cases", files=files, headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        right = guarded.post("/v1/cases", files=files,
                             headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200, right.text


@pytest.fixture(scope="module")
def small(tiny_run):
    """An app with small limits: 200 kB bodies, 2 files per field, 10,000 pixels."""
    from fastapi.testclient import TestClient

    from radpath.serve import Limits, create_app

    limits = Limits(max_request_bytes=200_000, max_files_per_field=2, max_pixels=10_000)
    with TestClient(create_app(tiny_run, limits=limits, threads=1)) as test_client:
        yield test_client


def test_oversized_request_is_413(small):
    big = np.random.default_rng(0).integers(0, 255, 300_000, dtype=np.uint8).tobytes()
    response = small.post("/v1/cases", files=[("mammo", ("big.png", big))])
    _refused(small, response, 413, "exceeds the limit", "max_request_bytes")


def test_oversized_body_without_content_length_is_413(small):
    def chunks():  # a well-formed start of a multipart body, then too many bytes
        yield (b'--b\r\nContent-Disposition: form-data; name="mammo"; filename="a.png"\r\n'
               b"Content-Type: image/png\r\n\r\n")
        for _ in range(40):
            yield b"x" * 10_000

    response = small.post("/v1/cases", content=chunks(),
                          headers={"content-type": "multipart/form-data; boundary=b"})
    assert "content-length" not in response.request.headers
    _refused(small, response, 413, "max_request_bytes")


def test_too_many_pixels_names_the_file(small):
    wide = png(np.tile(mammogram(100), (1, 2)))  # 100 x 200 = 20,000 pixels
    response = small.post("/v1/cases", files=[("mammo", ("wide.png", wide))])
    _refused(small, response, 413, "wide.png", "20,000 pixels", "max_pixels")


def test_too_many_files_is_refused(small, mammo_png):
    files = [("mammo", (f"m{i}.png", mammo_png)) for i in range(3)]
    _refused(small, small.post("/v1/cases", files=files), 413, "3 files in 'mammo'")


def test_non_image_names_the_file(client):
    response = client.post("/v1/cases", files=[("mammo", ("notes.txt", b"hello, world\n" * 9))])
    _refused(client, response, 415, "notes.txt", "not an image")


def test_truncated_png_names_the_file(client, mammo_png):
    response = client.post("/v1/cases", files=[("mammo", ("cut.png", mammo_png[:300]))])
    _refused(client, response, 422, "cut.png", "truncated")


def test_colour_image_is_not_a_mammogram(client, histo_png):
    response = client.post("/v1/cases", files=[("mammo", ("tile.png", histo_png))])
    _refused(client, response, 422, "tile.png", "colour", "mammogram")


def test_greyscale_image_is_not_histology(client, mammo_png):
    response = client.post("/v1/cases", files=[("mammo", ("m.png", mammo_png)),
                                                ("histo", ("grey.png", mammo_png))])
    _refused(client, response, 422, "grey.png", "histology")


def test_missing_mammo_field_is_422(client, histo_png):
    response = client.post("/v1/cases", files=[("histo", ("t.png", histo_png))])
    _refused(client, response, 422, "'mammo'")


@pytest.mark.parametrize(("kwargs", "status", "word"), [
    ({"json": {"mammo": "x"}}, 415, "multipart"),
    ({"data": {"mammo": "not a file"}, "files": [("histo", ("t.png", b"x"))]}, 422, "file"),
    ({"data": {"pairing": "maybe"}}, 422, "pairing"),
    ({"data": {"top_k": "-3"}}, 422, "top_k"),
    ({"files": [("mammo", ("empty.png", b""))]}, 422, "empty.png"),
])
def test_malformed_requests_are_4xx(client, mammo_png, kwargs, status, word):
    if "data" in kwargs and "files" not in kwargs:
        kwargs = {**kwargs, "files": [("mammo", ("m.png", mammo_png))]}
    _refused(client, client.post("/v1/cases", **kwargs), status, word)


@pytest.mark.parametrize("truncate", [False, True])
def test_dicom_identifiers_never_leave_the_server(client, caplog, truncate):
    caplog.set_level(logging.DEBUG)
    response = client.post("/v1/cases", files=[("mammo", ("exam.dcm", dicom_bytes(
        truncate=truncate)))])
    assert response.status_code == (422 if truncate else 200), response.text
    # Base64 images may hold "Doe" by chance: the parts are sought outside them.
    for secret in (PATIENT_NAME, PATIENT_ID, "ACC-778899", "Hidden Valley"):
        assert secret not in response.text and secret not in caplog.text
    body = {k: v for k, v in response.json().items() if k != "images"}
    shown = json.dumps(body) + caplog.text
    for secret in ("Doe", "Jane", "19610203", "20240517"):
        assert secret not in shown
    if truncate:
        assert "exam.dcm" in response.json()["detail"]


def test_histology_tiles_are_linked_to_regions(client, mammo_png):
    tiles = [("histo", (f"t{i}.png", png(histology(seed=i)))) for i in range(3)]
    response = client.post("/v1/cases", files=[("mammo", ("m.png", mammo_png)), *tiles],
                           data={"top_k": "2"})
    assert response.status_code == 200, response.text
    body = response.json()
    links = [link for region in body["regions"] for link in region["links"]]
    assert links and all(0 <= link["tile"] < len(body["tiles"]) for link in links)
    assert all(-1.0 <= link["similarity"] <= 1.0 for link in links)


def test_slow_case_is_504_busy_server_503_and_uploads_are_deleted(tiny_run, mammo_png,
                                                                  monkeypatch, tmp_path):
    import tempfile

    from fastapi.testclient import TestClient

    from radpath.serve import Limits, create_app

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    app = create_app(tiny_run, limits=Limits(timeout_s=0.001, max_pending=2), threads=1)
    with TestClient(app) as slow:
        files = [("mammo", ("m.png", mammo_png))]
        _refused(slow, slow.post("/v1/cases", files=files), 504, "timeout_s")
        app.state.radpath.pending = 2
        response = slow.post("/v1/cases", files=files)
        app.state.radpath.pending = 0
        _refused(slow, response, 503, "busy")
        assert response.headers["retry-after"]
    deadline = time.monotonic() + 30  # the abandoned case finishes, then cleans up
    while list(tmp_path.glob("radpath-case-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list(tmp_path.glob("radpath-case-*"))


def test_uploads_are_deleted_after_each_case(client, mammo_png, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert client.post("/v1/cases", files=[("mammo", ("m.png", mammo_png))]).status_code == 200
    assert client.post("/v1/cases", files=[("mammo", ("x.png", b"junk"))]).status_code == 415
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(("host", "token", "refused"), [
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False),
    ("0.0.0.0", None, True), ("192.168.1.20", None, True), ("example.org", None, True),
    ("0.0.0.0", "t0ken", False),
])
def test_serve_refuses_a_public_host_without_token(host, token, refused):
    from radpath.cli.serve_command import check_exposure
    from radpath.errors import RadpathError

    if refused:
        with pytest.raises(RadpathError, match="without a token"):
            check_exposure(host, token)
    else:
        check_exposure(host, token)


def test_serve_command_reads_the_token_from_the_environment(tiny_run, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from radpath.cli import serve_command

    app = typer.Typer()
    serve_command.register(app)
    app.command("noop", hidden=True)(lambda: None)  # two commands: 'serve' stays a name
    ran = {}
    monkeypatch.setattr("uvicorn.run", lambda served, **kw: ran.update(kw, app=served))
    refused = CliRunner().invoke(app, ["serve", "--run", str(tiny_run), "--host", "0.0.0.0"])
    assert refused.exit_code != 0 and "without a token" in str(refused.exception)
    monkeypatch.setenv("RADPATH_TOKEN", "from-env")
    result = CliRunner().invoke(app, ["serve", "--run", str(tiny_run), "--host", "0.0.0.0",
                                      "--port", "8123", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert ran["host"] == "0.0.0.0" and ran["port"] == 8123
    assert ran["app"].state.radpath.token == "from-env"
    assert ran["log_config"]["loggers"]["radpath.serve"]["level"] == "INFO"


def test_a_bug_is_a_json_500_without_identifiers(client, monkeypatch, caplog):
    def broken(*_args, **_kwargs):
        raise IndexError(f"boom near {PATIENT_ID}")

    monkeypatch.setattr("radpath.explain.case.explain_case", broken)
    caplog.set_level(logging.DEBUG)
    response = client.post("/v1/cases", files=[("mammo", ("exam.dcm", dicom_bytes()))])
    assert response.status_code == 500 and "internal error" in response.json()["detail"]
    assert "IndexError" in caplog.text and PATIENT_ID not in caplog.text + response.text
    assert client.get("/v1/health").status_code == 200
