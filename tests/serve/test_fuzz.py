"""Fuzzing: schema-driven requests (schemathesis) and a gallery of broken files.

Neither may ever get a 5xx: bad input is the client's fault and is answered with a 4xx
whose detail says what is wrong, and the server keeps serving afterwards.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import dicom_bytes, histology, mammogram, png

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (after the importorskip)
from schemathesis.checks import not_a_server_error  # noqa: E402

EXAMPLES = 30


@pytest.fixture(scope="module")
def fuzz_app(tiny_run):
    """Small limits so that generated bodies and broken files meet every limit quickly."""
    from radpath.serve import Limits, create_app

    return create_app(tiny_run, threads=1, limits=Limits(
        max_request_bytes=300_000, max_files_per_field=3, max_pixels=300 * 300))


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/cases"), ("GET", "/v1/health")])
def test_schema_fuzz_never_a_server_error(api_schema, method, path):
    # schemathesis' own pytest loader (from_fixture) sets a private pytest attribute that
    # pytest 9 no longer has: draw the cases from the operation's strategy instead.
    operation = api_schema[path][method]
    seen: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy())
    def check(case):
        response = case.call_and_validate(checks=[not_a_server_error])
        seen.append(response.status_code)
        if response.status_code >= 400:
            assert response.json()["detail"], response.text

    check()
    assert seen and max(seen) < 500


def _png_with_bad_crc(data: bytes) -> bytes:
    broken = bytearray(data)
    broken[29] ^= 0xFF  # inside the IHDR chunk: its CRC no longer matches
    return bytes(broken)


def _bomb_png(side: int = 20_000) -> bytes:
    """A PNG whose header claims side x side pixels (a decompression bomb, tiny on disk)."""
    raw = zlib.compress(b"\x00" * (side + 1) * 8, 9)
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _tiff(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="TIFF")
    return buffer.getvalue()


GOOD = png(mammogram())
BROKEN_FILES = {
    "empty.png": b"",
    "zeros.png": b"\x00" * 4096,
    "random.bin": np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    "magic-only.png": GOOD[:8],
    "header-only.png": GOOD[:40],
    "half.png": GOOD[: len(GOOD) // 2],
    "bad-crc.png": _png_with_bad_crc(GOOD),
    "bomb.png": _bomb_png(),
    "huge.png": png(np.tile(mammogram(310), (1, 1))),
    "constant.png": png(np.full((64, 64), 128, np.uint8)),
    "tiny.png": png(mammogram(8)),
    "truncated.tif": _tiff(mammogram())[:200],
    "fake.dcm": b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI" + b"\xff" * 40,
    "cut.dcm": dicom_bytes(truncate=True),
    "page.html": b"<html><body>not an image</body></html>",
    "script.svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
    "oversized.png": b"\x89PNG" + b"\x00" * 400_000,
    "../../etc/passwd": b"root:x:0:0:root:/root:/bin/bash\n",
}


# Files fine in general but of the wrong kind for their field.
WRONG_KIND = {"mammo": {"colour.png": png(histology()), "colour.tif": _tiff(histology())},
              "histo": {"grey.png": GOOD, "grey.tif": _tiff(mammogram())}}
CASES = [(field, name, content) for field in ("mammo", "histo")
         for name, content in {**BROKEN_FILES, **WRONG_KIND[field]}.items()]


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app):
    from fastapi.testclient import TestClient

    with TestClient(fuzz_app) as test_client:
        yield test_client


@pytest.mark.parametrize(("field", "name", "content"), CASES,
                         ids=[f"{field}-{name}" for field, name, _ in CASES])
def test_broken_file_is_a_clear_4xx(fuzz_client, field, name, content):
    files = [("mammo", (name, content))] if field == "mammo" else [
        ("mammo", ("good.png", GOOD)), ("histo", (name, content))]
    response = fuzz_client.post("/v1/cases", files=files)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    detail = response.json()["detail"]
    assert isinstance(detail, str) and len(detail) > 10
    if response.status_code != 413 or "max_request_bytes" not in detail:
        shown = name.rsplit("/", 1)[-1]
        assert shown in detail, detail  # the file is named (its sanitised base name)
    assert "/tmp" not in detail and "radpath-case-" not in detail
    assert fuzz_client.get("/v1/health").json()["status"] == "ok"
