"""The web viewer end to end in Debian's Chromium, driven by Playwright, on real images.

Opt-in (``-m browser``). Skips when /usr/bin/chromium, the playwright package or
../shared/data is missing. ``RADPATH_WRITE_SCREENSHOTS=1`` also writes docs/viewer.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.serve.conftest import REPO

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server_url(tiny_run):
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
    from radpath.serve import create_app

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tiny_run, threads=1), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the uvicorn server did not start within 30 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_viewer_shows_scores_heatmap_tiles_and_json(server_url, browser, mias_dir, ucsb_dir,
                                                    tmp_path):
    mammogram = mias_dir / "mdb001.png"
    histology = sorted(ucsb_dir.glob("*.tif"))
    if not mammogram.is_file() or not histology:
        pytest.skip(f"{mammogram} or a TIFF under {ucsb_dir} is absent")
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server_url + "/")
    page.set_input_files("#mammo", str(mammogram))
    page.set_input_files("#histo", str(histology[0]))
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden]), #error:not([hidden])", timeout=90_000)
    assert page.is_hidden("#error"), page.text_content("#error")

    for kind in ("mammo", "histo", "fused"):
        value = float(page.text_content(f"#score-{kind}"))
        assert 0.0 <= value <= 1.0

    heatmap = page.locator("img.heatmap").first
    assert heatmap.is_visible()
    assert heatmap.evaluate("img => img.complete && img.naturalWidth > 0")
    opacity = "img => getComputedStyle(img).opacity"
    page.fill("#opacity", "0.2")  # a range input takes fill(); it fires 'input'
    assert float(heatmap.evaluate(opacity)) == pytest.approx(0.2)
    page.fill("#opacity", "0.9")
    assert float(heatmap.evaluate(opacity)) == pytest.approx(0.9)

    assert page.locator(".marker").count() >= 1
    tile = page.locator("img.tile").first
    assert tile.is_visible() and tile.evaluate("img => img.naturalWidth > 0")
    assert "similarity" in page.text_content(".tile-card figcaption")
    assert page.text_content("#rationale").strip()
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert not errors, errors

    page.fill("#opacity", "0.5")
    shot = tmp_path / "viewer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("RADPATH_WRITE_SCREENSHOTS") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "viewer.png")
    page.close()
