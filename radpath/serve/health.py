"""``GET /`` (the viewer's page) and ``GET /v1/health``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from radpath.serve.state import ServerState

STATIC = Path(__file__).parent / "static"


def router(state: ServerState) -> APIRouter:
    """The viewer's page and the liveness route of the server of ``state``."""
    routes = APIRouter()

    @routes.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @routes.get("/v1/health", summary="Liveness and the model served")
    def health() -> dict[str, Any]:
        limits = state.limits.model_dump(include={"max_request_bytes", "max_files_per_field",
                                                  "max_pixels", "timeout_s", "body_timeout_s"})
        return {"status": "ok", "model": state.model_info(), "limits": limits,
                "thresholds": state.thresholds}

    @routes.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    return routes
