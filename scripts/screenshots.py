"""Remake the screenshots under ``docs/`` in headless Chromium (Playwright + Debian's
``/usr/bin/chromium``; nothing is downloaded).

    .venv/bin/python scripts/screenshots.py                 # every shot
    .venv/bin/python scripts/screenshots.py demo-report     # one of them

``demo-report`` (``docs/demo-report.png``): the top of the demo's ``report.html`` (the
test split's AUC with CI and spread of probabilities, the explained cases). It reads
``--demo-out`` (default ``demo-out``, what ``make demo`` writes) and runs the demo there
first when that folder has no report.

Each shot is one function in ``SHOTS``: add a viewer shot beside it.
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


SHOTS: dict[str, Callable[..., Path]] = {"demo-report": demo_report}


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
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
