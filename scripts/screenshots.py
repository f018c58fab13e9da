"""Remake the screenshots under ``docs/`` in headless Chromium (Playwright + Debian's
``/usr/bin/chromium``; nothing is downloaded).

    .venv/bin/python scripts/screenshots.py                 # every shot
    .venv/bin/python scripts/screenshots.py demo-report     # one of them

``demo-report`` (``docs/demo-report.png``): the top of the demo's ``report.html`` (the
test split's AUC with CI and spread of probabilities, the explained cases). It reads
``--demo-out`` (default ``demo-out``, what ``make demo`` writes) and runs the demo there
first when that folder has no report.

``viewer`` (``docs/viewer.png`` and ``docs/viewer-zoom.png``): ``radpath
serve`` on the demo's run (thresholds from its evaluation), a malignant test patient of the
demo cohort uploaded with H&E of three patients, then the first film zoomed in with a
narrower window. They read (or make) ``--demo-out`` too.

Each shot is one function in ``SHOTS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
WIDTH = 1200


def demo_report(browser, options: argparse.Namespace) -> Path:
    """The demo report's summary and first explained case."""
    report = Path(options.demo_out) / "report.html"
    if not report.is_file():
        from radpath.demo import run_demo

        print(f"no {report}: running the demo into {options.demo_out} first", file=sys.stderr)
        report = run_demo(options.demo_out)["report"]
    page = browser.new_page(viewport={"width": WIDTH, "height": 900})
    page.goto(report.resolve().as_uri())
    # Down to the end of the first explained case's figure: the part worth a glance.
    figure = page.locator("h3 ~ img").first
    box = figure.bounding_box() if figure.count() else None
    height = min(2200, round(box["y"] + box["height"] + 16)) if box else 1400
    target = DOCS / "demo-report.png"
    page.screenshot(path=str(target), clip={"x": 0, "y": 0, "width": WIDTH, "height": height},
                    full_page=True)
    page.close()
    return target


def _demo_out(options: argparse.Namespace) -> Path:
    out = Path(options.demo_out)
    if not (out / "run").is_dir() or not (out / "manifest.csv").is_file():
        from radpath.demo import run_demo

        print(f"no run in {out}: running the demo there first", file=sys.stderr)
        run_demo(out)
    return out


def _demo_case(out: Path) -> dict[str, list[str]]:
    """A malignant test patient's films, and H&E of one patient of each label."""
    from radpath.data.manifest import read_manifest

    records = [r for r in read_manifest(out / "manifest.csv") if r.split == "test"]
    malignant = sorted({r.patient_id for r in records if r.label == "malignant"
                        and r.modality == "mammo" and r.lesions})
    mammo = [r.path for r in records if r.modality == "mammo" and r.patient_id == malignant[0]]
    histo = []
    for label in ("malignant", "benign", "normal"):
        histo += [r.path for r in records if r.modality == "histo" and r.label == label][:1]
    return {"mammo": mammo, "histo": histo}


def _serve(out: Path):
    """``radpath serve`` of the demo's run on a free loopback port, in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    from radpath.serve import create_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    points = out / "eval" / "none" / "operating_points.json"
    app = create_app(out / "run", threads=1, thresholds=points if points.is_file() else None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, f"http://127.0.0.1:{port}"


def viewer_shots(browser, options: argparse.Namespace) -> list[Path]:
    """The viewer on a demo case, then zoomed in with window/level changed."""
    out = _demo_out(options)
    case = _demo_case(out)
    server, url = _serve(out)
    try:
        page = browser.new_page(viewport={"width": WIDTH, "height": 1100})
        page.goto(url + "/")
        page.set_input_files("#mammo", case["mammo"])
        page.set_input_files("#histo", case["histo"])
        page.click("#submit")
        page.wait_for_selector("figure.view[data-ready='true']", timeout=120_000)
        page.wait_for_timeout(800)
        first = DOCS / "viewer.png"
        page.screenshot(path=str(first), full_page=True)
        # Zoom on the film holding the most suspicious region, at that region's marker.
        marker = page.locator(".marker[data-rank='1']").bounding_box()
        page.mouse.move(marker["x"] + marker["width"] / 2, marker["y"] + marker["height"] / 2)
        for _ in range(3):
            page.mouse.wheel(0, -400)
            page.wait_for_timeout(200)
        page.fill("#window", "0.6")
        page.fill("#level", "0.45")
        page.fill("#opacity", "0.35")
        page.wait_for_timeout(1000)
        panel = page.locator("#views").bounding_box()
        zoom = DOCS / "viewer-zoom.png"
        page.screenshot(path=str(zoom), clip={"x": 0, "y": panel["y"] - 90, "width": WIDTH,
                                              "height": panel["height"] + 100},
                        full_page=True)
        page.close()
    finally:
        server.should_exit = True
    return [first, zoom]


def viewer(browser, options: argparse.Namespace) -> Path:
    """``docs/viewer.png`` (and, with it, ``docs/viewer-zoom.png``)."""
    return viewer_shots(browser, options)[0]


SHOTS: dict[str, Callable[..., Path]] = {"demo-report": demo_report, "viewer": viewer}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shots", nargs="*", metavar="SHOT",
                        help=f"which to remake (default: all of {', '.join(SHOTS)})")
    parser.add_argument("--demo-out", default="demo-out", help="the demo's output folder")
    options = parser.parse_args(argv)
    unknown = sorted(set(options.shots) - SHOTS.keys())
    if unknown:
        parser.error(f"unknown shot(s) {', '.join(unknown)}; known: {', '.join(SHOTS)}")
    if not CHROMIUM.is_file():
        print(f"{CHROMIUM} is absent (apt-get install chromium)", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            for name in options.shots or SHOTS:
                print(f"{name}: {SHOTS[name](browser, options).relative_to(ROOT)}")
                if name == "viewer":
                    print("viewer-zoom: docs/viewer-zoom.png")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
