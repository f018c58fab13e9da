"""A slide through ``radpath explain --slide`` and the viewer, screenshot into docs/.

Trains the slide MIL (colour-statistics encoder, 40 epochs) on the synthetic CAMELYON16
layout, tiles the real DICOM WSI of ../shared/data (or, when absent, a synthetic test
slide), explains it and opens it in the /slides viewer in Debian's Chromium through
Playwright, with the attention heatmap over it. The model never saw a real slide or a
real label: the picture shows the machinery, not a finding.

    .venv/bin/python benchmarks/wsi_viewer.py

writes docs/slide-viewer.png and docs/slide-explain.png.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_SLIDE = ROOT.parent / "shared" / "data" / "wsi" / "cmu-1-small-region"
DOCS = ROOT / "docs"


def train(scratch: Path) -> Path:
    from radpath.data.manifest import Record
    from radpath.data.sources import SOURCES
    from radpath.data.sources.camelyon16 import annotation_path
    from radpath.data.wsi import Slide
    from radpath.models.slide_mil import SlideMILConfig, fit_slide_mil, save_slide_model
    from radpath.slides.bags import build_bags
    from radpath.slides.features import ColourStats, cache_features
    from radpath.slides.grid import GridConfig, make_grid, write_coords
    from radpath.slides.synthetic_layouts import camelyon16

    root = camelyon16(scratch / "camelyon16")
    records = [r for r in SOURCES.get("camelyon16")(root).scan()
               if isinstance(r, Record) and r.split != "test"]
    grid_config = GridConfig(mpp=1.0, size=32, min_tissue=0.5)
    slides, dims = [], {}
    for record in records:
        with Slide(record.path) as slide:
            grid = make_grid(slide, grid_config)
            dims[record.image_id] = slide.dimensions
        slides.append((record.image_id, record.path,
                       write_coords(grid, scratch / "coords" / f"{record.image_id}.h5")))
    cache_features(slides, scratch / "features", ColourStats())
    bags = build_bags(records, scratch / "features", patch_size0=32, dimensions=dims,
                      annotations={r.image_id: annotation_path(Path(r.path)) for r in records})
    config = SlideMILConfig(num_grades=0, epochs=40, lr=3e-3)
    model = fit_slide_mil(bags, config)
    return save_slide_model(model, scratch / "model", dim=6, config=config,
                            encoder="colour-stats", grid=grid_config.model_dump())


def explain(scratch: Path, model: Path) -> tuple[Path, str]:
    from radpath.explain.slide import explain_slide
    from radpath.slides.catalog import ingest_slides
    from radpath.slides.grid import GridConfig
    from radpath.slides.tiling import tile_slides

    source = REAL_SLIDE.parent
    if not REAL_SLIDE.is_dir():
        source = scratch / "slides"
        source.mkdir()
        shutil.copy(scratch / "camelyon16" / "testing" / "images" / "test_002.tif", source)
    rows, _ = ingest_slides(source, scratch / "slides.csv", workers=1, progress=False)
    image_id = rows[0].record.image_id
    tile_slides(scratch / "slides.csv", scratch / "tiles",
                GridConfig(mpp=2.0 if REAL_SLIDE.is_dir() else 1.0, size=32, min_tissue=0.5),
                workers=1, progress=False)
    written = explain_slide(rows[0].record.path, scratch / "tiles" / f"{image_id}.h5", model,
                            scratch / "heatmaps" / image_id, image_id=image_id)
    from PIL import Image

    figure = Image.open(written["figure"])
    figure.thumbnail((1400, 700))  # the docs copy: small enough to ship
    figure.save(DOCS / "slide-explain.png", optimize=True)
    return scratch / "slides.csv", image_id


def serve_and_shoot(slides_csv: Path, heatmaps: Path, image_id: str) -> None:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    from playwright.sync_api import sync_playwright

    from radpath.serve.slides import STATIC, slide_router

    app = FastAPI()
    app.include_router(slide_router(slides_csv, heatmaps=heatmaps))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                                 headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/slides?slide={image_id}")
            page.wait_for_function("viewer.world.getItemCount() >= 2 && "
                                   "viewer.world.getItemAt(0).getFullyLoaded()", timeout=60_000)
            page.evaluate("viewer.viewport.zoomBy(1.6); viewer.viewport.applyConstraints()")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(DOCS / "slide-viewer.png"))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        model = train(scratch)
        slides_csv, image_id = explain(scratch, model)
        serve_and_shoot(slides_csv, scratch / "heatmaps", image_id)
    print(f"written {DOCS / 'slide-viewer.png'} and {DOCS / 'slide-explain.png'}")


if __name__ == "__main__":
    main()
