"""The service under hostile clients (issue 44, points 1, 6 and 10): JSON answers only,
nothing echoed or logged that a client typed, slow and vanishing clients let go."""

from __future__ import annotations

import logging
import socket
import threading
import time

import numpy as np
import pytest

from radpath.cli.serve_command import check_exposure
from radpath.errors import RadpathError
from tests.fuzz_corpus import histo_pixels, pillow_bytes, rle_panic_dicom
from tests.serve.conftest import mammogram, png


def _post(client, files, data=None):
    return client.post("/v1/cases", files=files, data=data or {})


# ---------------------------------------------------------------- 1. a decoder panic


def test_a_panicking_dicom_is_a_json_4xx(client, mammo_png):
    response = _post(client, [("mammo", ("panic.dcm", rle_panic_dicom(), "application/dicom"))])
    assert response.status_code == 422
    assert "decoder failed" in response.json()["detail"]
    assert client.get("/v1/health").status_code == 200


class _Panic(BaseException):
    """Like pyo3's PanicException: not an Exception."""


def test_an_escaping_base_exception_is_a_json_500(tiny_run, mammo_png, monkeypatch):
    from fastapi.testclient import TestClient

    import radpath.explain.case as case
    from radpath.serve import create_app

    def explode(*args, **kwargs):
        raise _Panic("index out of bounds")

    monkeypatch.setattr(case, "explain_case", explode)
    with TestClient(create_app(tiny_run, threads=1), raise_server_exceptions=False) as client:
        response = _post(client, [("mammo", ("a.png", mammo_png, "image/png"))])
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert "internal error" in response.json()["detail"]
        assert client.get("/v1/health").status_code == 200


# ---------------------------------------------------------------- 6. service edges


@pytest.mark.parametrize("token", [" ", "\t", ""])
def test_a_blank_token_does_not_open_a_public_address(token):
    with pytest.raises(RadpathError, match="without a token"):
        check_exposure("0.0.0.0", token)


def test_text_fields_are_never_echoed_or_logged(client, mammo_png, caplog):
    caplog.set_level(logging.INFO, logger="radpath.serve")
    secret = "Doe^Jane-19610203"
    for field in ("pairing", "top_k", "map_kind"):
        response = _post(client, [("mammo", ("a.png", mammo_png, "image/png"))],
                         {field: secret})
        assert response.status_code == 422
        assert field in response.json()["detail"]
        assert "Doe" not in response.text
    assert "Doe" not in caplog.text


def test_access_log_drops_query_strings():
    from logging.config import DictConfigurator

    from radpath.cli.serve_command import log_config

    config = log_config()
    names = config["handlers"]["access"]["filters"]
    filters = [DictConfigurator(config).configure_custom(dict(config["filters"][name]))
               for name in names]
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/v1/health?token=SECRET", "1.1", 200),
                               None)
    assert all(f.filter(record) for f in filters)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/health HTTP/1.1" 200'


@pytest.fixture(scope="module")
def live_server(tiny_run):
    """The app under a real uvicorn on loopback, with a 1 s body deadline."""
    import uvicorn

    from radpath.serve import Limits, create_app

    app = create_app(tiny_run, threads=1, limits=Limits(body_timeout_s=1.0))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(10)


_HEAD = ("POST /v1/cases HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
         "boundary=xyz\r\nContent-Length: 100000\r\n\r\n")


def test_a_byte_a_second_client_is_cut_off_at_the_body_deadline(live_server):
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as conn:
        conn.sendall(_HEAD.encode() + b"--xyz\r\n")
        started = time.monotonic()
        answer = b""
        conn.settimeout(0.3)
        while time.monotonic() - started < 8:
            try:
                conn.sendall(b"a")
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break  # closed by the server
            answer += chunk
        elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"detail"' in answer and b"body_timeout_s" in answer
    assert elapsed < 4, elapsed


def test_a_vanishing_client_logs_one_line_not_a_traceback(live_server, caplog):
    caplog.set_level(logging.INFO)
    with socket.create_connection(("127.0.0.1", live_server), timeout=10) as conn:
        conn.sendall(_HEAD.encode() + b"--xyz\r\nContent-Disposition: form-data; ")
        time.sleep(0.2)
    deadline = time.monotonic() + 5
    while "disconnected" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "client disconnected" in caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text


# ---------------------------------------------------------------- 10. modality sanity


def test_a_grey_picture_saved_as_rgb_is_not_histology(client, mammo_png):
    grey = mammogram()
    response = _post(client, [("mammo", ("a.png", mammo_png, "image/png")),
                              ("histo", ("grey.png", png(np.dstack([grey] * 3)), "image/png"))])
    assert response.status_code == 422
    assert "without colour" in response.json()["detail"]
    stained = pillow_bytes(histo_pixels(64), "PNG")
    response = _post(client, [("mammo", ("a.png", mammo_png, "image/png")),
                              ("histo", ("he.png", stained, "image/png"))])
    assert response.status_code == 200
