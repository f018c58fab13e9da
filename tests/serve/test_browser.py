"""The web viewer end to end in Debian's Chromium, driven by Playwright.

Opt-in (``-m browser``); ``make test`` and CI run them too. The synthetic tests need no
real data (a fresh clone runs them); they skip only when /usr/bin/chromium or the
playwright package is missing (and fail instead under ``RADPATH_REQUIRE_BROWSER=1``, as
in CI). The real-image test also needs ../shared/data. Each test
keeps its screenshots under ``$RADPATH_ARTIFACTS/browser`` (default ``artifacts/`` in the
repository, ignored by git).
"""

from __future__ import annotations

import io
import itertools
import os
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
READY = "figure.view[data-ready='true']"


def artifacts() -> Path:
    folder = Path(os.environ.get("RADPATH_ARTIFACTS", REPO / "artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def operating_points(tiny_run) -> Path:
    """The tiny run evaluated (on its training split: the cohort has no test split), with
    thresholds chosen on its validation split."""
    from radpath.evaluation.runner import evaluate_run

    out = tiny_run.parent / "eval"
    evaluate_run(tiny_run, [tiny_run.parent / "cohort.csv"], out, split="train", workers=0,
                 n_boot=20, progress=False)
    return out / "operating_points.json"


@pytest.fixture(scope="module")
def server_url(tiny_run, operating_points):
    uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed")
    from radpath.serve import create_app

    port = _free_port()
    app = create_app(tiny_run, threads=1, thresholds=operating_points)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
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


def _missing(why: str) -> None:
    """Skip, or fail where the browser is required (CI sets RADPATH_REQUIRE_BROWSER=1)."""
    if os.environ.get("RADPATH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why}, and RADPATH_REQUIRE_BROWSER=1")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        _missing(f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        _missing("the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                              args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def synthetic_case(tmp_path_factory) -> dict[str, list[Path]]:
    """A malignant synthetic patient's two 512-px films and H&E of all three labels."""
    from radpath.data.manifest import read_manifest
    from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort

    root = tmp_path_factory.mktemp("browser-case")
    manifest = make_synthetic_cohort(root, SyntheticConfig(
        n_patients=3, mammo_size=512, tile_size=64, both_fraction=1.0, seed=5))
    records = list(read_manifest(manifest))
    mammo = [Path(r.path) for r in records if r.modality == "mammo" and r.patient_id
             in {x.patient_id for x in records if x.label == "malignant"}]
    histo = [Path(r.path) for r in records if r.modality == "histo"]
    return {"mammo": mammo, "histo": histo}


def _open_case(browser, server_url, files: dict[str, list[Path]], statuses: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda r: r.status >= 400 and statuses.append(f"{r.status} {r.url}"))
    page.goto(server_url + "/")
    page.set_input_files("#mammo", [str(p) for p in files["mammo"]])
    page.set_input_files("#histo", [str(p) for p in files["histo"]])
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden]), #error:not([hidden])", timeout=90_000)
    assert page.is_hidden("#error"), page.text_content("#error")
    page.wait_for_selector(READY, timeout=30_000)
    return page, errors


def _label_boxes(page) -> list[dict]:
    return page.eval_on_selector_all(".region-label", "els => els.map(e => { "
                                     "const r = e.getBoundingClientRect(); return {x: r.x, "
                                     "y: r.y, w: r.width, h: r.height, rank: e.dataset.rank};"
                                     " })")


def _assert_apart(boxes: list[dict]) -> None:
    for a, b in itertools.combinations(boxes, 2):
        apart = (a["x"] + a["w"] <= b["x"] + 0.5 or b["x"] + b["w"] <= a["x"] + 0.5
                 or a["y"] + a["h"] <= b["y"] + 0.5 or b["y"] + b["h"] <= a["y"] + 0.5)
        assert apart, f"labels {a['rank']} and {b['rank']} overlap: {a}, {b}"


def _mean_grey(png: bytes) -> float:
    import numpy as np
    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float).mean())


def test_synthetic_case_scores_zoom_window_level_and_links(server_url, browser,
                                                           synthetic_case):
    statuses: list[str] = []
    page, errors = _open_case(browser, server_url, synthetic_case, statuses)
    shots = artifacts()

    # The header names the run, not "(run run)"; the favicon is served.
    header = page.text_content("header")
    assert "run run" not in header and "serve-run" in page.text_content("#run-name")
    assert page.request.get(server_url + "/favicon.ico").status == 200

    # Probabilities, each beside the threshold chosen on validation.
    for kind in ("mammo", "histo", "fused"):
        value = float(page.text_content(f"#score-{kind}"))
        assert 0.0 <= value <= 1.0
        threshold = page.text_content(f"#threshold-{kind}")
        assert threshold.startswith("threshold 0.") or threshold.startswith("threshold 1.")
        cut = float(threshold.split()[1])
        side = "at or above" if value >= cut else "below"
        assert side in threshold, threshold
    assert "validation" in page.text_content("#threshold-fused")

    # The film is shown at its full resolution in the deep-zoom viewer.
    full = page.evaluate("window.radpathViewers[0].world.getItemAt(0).getContentSize().x")
    assert full == 512
    page.screenshot(path=str(shots / "synthetic-case.png"), full_page=True)

    # Labels never overlap, before and after zooming in.
    regions = page.locator("#regions > li").count()
    assert regions >= 2
    assert page.locator(".region-label").count() == regions
    _assert_apart(_label_boxes(page))

    figure = page.locator("figure.view").first
    before = float(figure.get_attribute("data-zoom"))
    box = page.locator("#osd-0").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(4):
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(150)
    deadline = time.monotonic() + 10  # (wait_for_function evaluates a string: CSP refuses)
    while float(figure.get_attribute("data-zoom")) <= before * 2:
        assert time.monotonic() < deadline, f"zoom stayed at {figure.get_attribute('data-zoom')}"
        page.wait_for_timeout(100)
    _assert_apart(_label_boxes(page))
    centre = page.evaluate("window.radpathViewers[0].viewport.getCenter(true).x")
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 150, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    page.wait_for_timeout(600)
    assert page.evaluate("window.radpathViewers[0].viewport.getCenter(true).x") != centre
    page.screenshot(path=str(shots / "synthetic-zoom.png"), full_page=True)

    # Window/level changes the film's grey values (and only through the filter).
    page.fill("#opacity", "0")
    page.wait_for_timeout(200)
    plain = _mean_grey(page.locator("#osd-0").screenshot())
    page.fill("#window", "0.2")
    page.fill("#level", "0.2")
    assert float(page.get_attribute("#wl-r", "slope")) == pytest.approx(5.0)
    assert float(page.get_attribute("#wl-r", "intercept")) == pytest.approx(-0.5)
    page.wait_for_timeout(300)
    windowed = _mean_grey(page.locator("#osd-0").screenshot())
    assert windowed > plain + 5, (plain, windowed)
    page.screenshot(path=str(shots / "synthetic-window-level.png"), full_page=True)

    # Heat-map opacity follows the slider.
    heat = page.locator("img.heatmap").first
    page.fill("#opacity", "0.8")
    assert float(heat.evaluate("img => getComputedStyle(img).opacity")) == pytest.approx(0.8)

    # Distinct region links: regions do not all link the same tiles with the same values.
    links = [tuple(c.text_content() for c in li.locator(".tile-card figcaption").all())
             for li in page.locator("#regions > li").all()]
    assert all(links) and len(set(links)) > 1, links
    assert "less its whole view" in page.text_content("#link-method")
    assert not errors, errors
    assert not statuses, statuses
    page.close()


def test_label_layout_never_overlaps_on_crowded_circles(server_url, browser):
    page = browser.new_page(viewport={"width": 800, "height": 600})
    page.goto(server_url + "/")
    # Five circles on one spot, two at the edge and one tiny: the worst cases.
    boxes = page.evaluate("""() => window.radpathLabels.layoutLabels([
        {rank: 1, x: 200, y: 200, r: 30}, {rank: 2, x: 201, y: 200, r: 30},
        {rank: 3, x: 200, y: 201, r: 5}, {rank: 4, x: 202, y: 202, r: 60},
        {rank: 5, x: 199, y: 199, r: 1}, {rank: 6, x: 2, y: 2, r: 10},
        {rank: 7, x: 398, y: 298, r: 10}, {rank: 8, x: 200, y: 200, r: 0}],
        26, 20, {width: 400, height: 300})""")
    assert sorted(b["rank"] for b in boxes) == list(range(1, 9))
    _assert_apart([{"x": b["x"], "y": b["y"], "w": b["w"], "h": b["h"], "rank": b["rank"]}
                   for b in boxes])
    page.close()


def test_viewer_on_real_images(server_url, browser, mias_dir, ucsb_dir):
    mammogram = mias_dir / "mdb001.png"
    histology = sorted(ucsb_dir.glob("*.tif"))
    if not mammogram.is_file() or not histology:
        pytest.skip(f"{mammogram} or a TIFF under {ucsb_dir} is absent")
    statuses: list[str] = []
    page, errors = _open_case(browser, server_url, {"mammo": [mammogram],
                                                    "histo": histology[:1]}, statuses)
    for kind in ("mammo", "histo", "fused"):
        assert 0.0 <= float(page.text_content(f"#score-{kind}")) <= 1.0
    heatmap = page.locator("img.heatmap").first
    assert heatmap.evaluate("img => img.complete && img.naturalWidth > 0")
    assert page.locator(".marker").count() >= 1
    _assert_apart(_label_boxes(page))
    tile = page.locator("img.tile").first
    assert tile.is_visible() and tile.evaluate("img => img.naturalWidth > 0")
    assert "similarity" in page.text_content(".tile-card figcaption")
    assert page.text_content("#rationale").strip()
    assert page.get_attribute("#download", "href").startswith("blob:")
    assert not errors, errors
    page.screenshot(path=str(artifacts() / "real-case.png"), full_page=True)
    page.close()
