"""Whole slides in the service: Deep Zoom (DZI) tiles, heatmap overlays and a slide page.

``slide_router(slides_csv, heatmaps=...)`` serves every slide of a ``slides.csv``:

- ``GET /v1/slides``: the slides (id, size, mpp, which heatmaps exist);
- ``GET /v1/slides/{id}.dzi`` and ``/v1/slides/{id}_files/{level}/{col}_{row}.jpeg``: the
  Deep Zoom pyramid, cut region by region by OpenSlide's ``DeepZoomGenerator``;
- ``GET /v1/slides/{id}/heatmaps/{map}.png``: an overlay written by ``radpath explain
  --slide`` into ``heatmaps/<id>/``;
- ``GET /slides``: the viewer page (OpenSeadragon, vendored under static/vendor).

Slide handles are opened once and kept; tiles are cut on request, never the whole slide.
"""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import FileResponse

STATIC = Path(__file__).parent / "static"
_ID = re.compile(r"^[A-Za-z0-9._-]+$")
_MAPS = ("attention", "localisation")


class _DeepZoomView:
    """The slice of the OpenSlide API ``DeepZoomGenerator`` reads, over a radpath ``Slide``
    (so DICOM colour repair and the wsidicom fallback apply to the viewer too)."""

    def __init__(self, slide) -> None:
        self._slide = slide
        self.properties: dict[str, str] = {}
        self.dimensions = slide.dimensions
        self.level_dimensions = slide.level_dimensions
        self.level_downsamples = slide.level_downsamples
        self.level_count = slide.level_count

    def get_best_level_for_downsample(self, downsample: float) -> int:
        return self._slide.best_level_for_downsample(downsample)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]):
        from PIL import Image

        rgb = self._slide.read_region(location[0], location[1], level, size[0], size[1])
        return Image.fromarray(rgb).convert("RGBA")


class _Slides:
    def __init__(self, slides_csv: Path, heatmaps: Path | None, tile_size: int) -> None:
        from radpath.slides.catalog import read_slides

        self.rows = {record.image_id: (record, mpp) for record, mpp in read_slides(slides_csv)}
        self.heatmaps = heatmaps
        self.tile_size = tile_size
        self._zooms: dict[str, Any] = {}
        self._lock = threading.Lock()

    def zoom(self, image_id: str):
        if not _ID.match(image_id) or image_id not in self.rows:
            raise HTTPException(404, f"no slide {image_id!r}")
        with self._lock:
            if image_id not in self._zooms:
                from openslide.deepzoom import DeepZoomGenerator

                from radpath.data.wsi import Slide

                record, mpp = self.rows[image_id]
                view = _DeepZoomView(Slide(record.path, mpp=mpp))
                self._zooms[image_id] = (threading.Lock(), DeepZoomGenerator(
                    view, tile_size=self.tile_size, overlap=1, limit_bounds=False))
            return self._zooms[image_id]

    def heatmap(self, image_id: str, name: str) -> Path | None:
        if self.heatmaps is None or name not in _MAPS or not _ID.match(image_id):
            return None
        path = self.heatmaps / image_id / f"{name}.png"
        return path if path.is_file() else None

    def describe(self, image_id: str) -> dict[str, Any]:
        record, mpp = self.rows[image_id]
        _, zoom = self.zoom(image_id)
        width, height = zoom.level_dimensions[-1]
        return {"id": image_id, "width": width, "height": height, "mpp": mpp,
                "label": record.label, "domain": record.domain,
                "heatmaps": [m for m in _MAPS if self.heatmap(image_id, m)]}


def slide_router(slides_csv: str | Path, *, heatmaps: str | Path | None = None,
                 tile_size: int = 254) -> APIRouter:
    """The router serving the slides of ``slides_csv`` (see the module docstring)."""
    state = _Slides(Path(slides_csv), Path(heatmaps) if heatmaps else None, tile_size)
    router = APIRouter()

    @router.get("/slides", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "slides.html", media_type="text/html")

    @router.get("/v1/slides", summary="The slides served")
    def list_slides() -> list[dict[str, Any]]:
        return [state.describe(i) for i in state.rows]

    @router.get("/v1/slides/{image_id}.dzi", summary="Deep Zoom descriptor of a slide")
    def dzi(image_id: str) -> Response:
        _, zoom = state.zoom(image_id)
        return Response(zoom.get_dzi("jpeg"), media_type="application/xml")

    @router.get("/v1/slides/{image_id}_files/{level}/{col}_{row}.jpeg",
                summary="One Deep Zoom tile")
    def tile(image_id: str, level: int, col: int, row: int) -> Response:
        lock, zoom = state.zoom(image_id)
        try:
            with lock:  # one OpenSlide handle: cut its tiles one at a time
                image = zoom.get_tile(level, (col, row))
        except ValueError:
            raise HTTPException(404, f"no tile {level}/{col}_{row} in {image_id!r}") from None
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=85)
        return Response(buffer.getvalue(), media_type="image/jpeg")

    @router.get("/v1/slides/{image_id}/heatmaps/{name}.png", summary="A slide heatmap overlay")
    def heatmap(image_id: str, name: str) -> FileResponse:
        path = state.heatmap(image_id, name)
        if path is None:
            raise HTTPException(404, f"no {name!r} heatmap for {image_id!r}")
        return FileResponse(path, media_type="image/png")

    return router
