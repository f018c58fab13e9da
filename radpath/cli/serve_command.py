"""``radpath serve``: the HTTP API and web viewer of one trained run."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from radpath.errors import RadpathError

console = Console(stderr=True)
TOKEN_ENV = "RADPATH_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name, or 0.0.0.0: reachable from elsewhere


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token.

    Raises:
        RadpathError: ``host`` is not a loopback address and ``token`` is empty or blank
            (a blank token would pass this check, then refuse every request).
    """
    if not (token or "").strip() and not is_loopback(host):
        raise RadpathError(f"refusing to serve on {host!r} without a token: anyone who can "
                           f"reach it could upload images. Give --token (or set {TOKEN_ENV}), "
                           "or serve on 127.0.0.1 behind your own authenticating proxy")


def serve(
    run: Annotated[Path, typer.Option("--run", help="Run folder written by radpath train.")],
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    token: Annotated[str | None, typer.Option(
        help=f"Bearer token required by POST /v1/cases (default: ${TOKEN_ENV}). Needed "
             "when --host is not a loopback address.")] = None,
    max_mb: Annotated[float, typer.Option(help="Largest request body in MB.", min=0.01)] = 64,
    max_files: Annotated[int, typer.Option(help="Most files per field.", min=1)] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds allowed per case.", min=0.1)] = 120,
    body_timeout: Annotated[float, typer.Option(
        help="Seconds a request body may take to arrive, all of it.", min=0.1)] = 30,
    max_connections: Annotated[int, typer.Option(
        help="Open connections served at once; more are answered 503.", min=1)] = 64,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.", min=1)] = None,
    slides: Annotated[Path | None, typer.Option(help="slides.csv whose slides to serve as "
                                                     "Deep Zoom tiles at /slides.")] = None,
    heatmaps: Annotated[Path | None, typer.Option(help="Folder of <image_id>/<map>.png slide "
                                                       "heatmaps (radpath explain --slide).")]
    = None,
    thresholds: Annotated[Path | None, typer.Option(
        help="operating_points.json of radpath evaluate on this run: the viewer shows its "
             "validation-chosen thresholds (else 0.5, labelled a default).")] = None,
) -> None:
    """Serve the API (POST /v1/cases, GET /v1/health) and the web viewer at /."""
    token = (token or os.environ.get(TOKEN_ENV) or "").strip() or None
    check_exposure(host, token)

    import uvicorn

    from radpath.serve.app import create_app
    from radpath.serve.limits import Limits

    limits = Limits(max_request_bytes=int(max_mb * 1024 * 1024), max_files_per_field=max_files,
                    timeout_s=timeout, body_timeout_s=body_timeout)
    app = create_app(run, token=token, limits=limits, threads=threads,
                     thresholds=thresholds)
    if slides is not None:
        from radpath.serve.slides import slide_router

        app.include_router(slide_router(slides, heatmaps=heatmaps))
    shown = f"[{host}]" if ":" in host else host
    console.print(f"radpath serving {run.name} at http://{shown}:{port}/ "
                  f"({'token required' if token else 'no token'}); Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_config=log_config(), server_header=False,
                limit_concurrency=max_connections)


def log_config() -> dict:
    """uvicorn's logging without query strings, plus radpath.serve's lines."""
    from radpath.serve.logs import log_config as config

    return config()


def register(app: typer.Typer) -> None:
    app.command()(serve)
