"""The radpath HTTP server: one trained run, explained case by case, and its web viewer.

The app is assembled here from router modules, one per job: :mod:`~radpath.serve.health`
(the viewer's page, ``/v1/health``) and :mod:`~radpath.serve.cases` (``POST /v1/cases``).
Each module has ``router(state) -> APIRouter``; a new one is one line in :data:`ROUTERS`
(or passed to :func:`create_app` as ``routers``). :mod:`~radpath.serve.guard` wraps them
all (body size and time limits, security headers, JSON 500s).

Privacy: uploads live in a private temporary folder deleted after the request; a DICOM's
identifying tag values are scrubbed from every response and log line; logs never hold a
request body or a text field's value, only counts, sanitised file names and timings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from radpath.serve import cases, health
from radpath.serve.errors import add_error_handlers
from radpath.serve.guard import Guard
from radpath.serve.limits import Limits
from radpath.serve.state import ServerState, version

STATIC = Path(__file__).parent / "static"
RouterFactory = Callable[[ServerState], APIRouter]
# The routes of every server, in order.
ROUTERS: tuple[RouterFactory, ...] = (health.router, cases.router)


def create_app(run_dir: str | Path, *, token: str | None = None,
               limits: Limits | None = None, threads: int | None = None,
               routers: Sequence[RouterFactory] = (),
               thresholds: str | Path | None = None) -> FastAPI:
    """The server of one trained run.

    Args:
        run_dir: a run folder written by ``radpath train``; loaded once, here.
        token: when given, ``POST /v1/cases`` needs ``Authorization: Bearer <token>``
            (surrounding blanks are ignored; a blank token is no token).
        limits: request limits (:class:`~radpath.serve.limits.Limits`; None: defaults).
        threads: torch CPU threads (``torch.set_num_threads``); None keeps torch's default.
        routers: more router factories, included after :data:`ROUTERS`.
        thresholds: ``operating_points.json`` (or ``metrics.json``) of ``radpath evaluate``
            on this run: its validation-chosen thresholds are shown beside the
            probabilities and the rationale reads against the fused one (else 0.5, said so).

    Raises:
        RadpathError: ``run_dir`` is not a loadable run folder.
    """
    from radpath.engine.checkpoint import load_run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from radpath.explain.case import MAP_KINDS
    from radpath.serve.thresholds import read_thresholds

    state = ServerState(load_run(run_dir), (token or "").strip() or None, limits or Limits(),
                        map_kinds=tuple(MAP_KINDS), thresholds=read_thresholds(thresholds))
    app = FastAPI(title="radpath", version=version(),
                  summary="Explain a breast case: mammograms, optional histology tiles.")
    app.state.radpath = state
    app.add_middleware(Guard, max_bytes=state.limits.max_request_bytes,
                       body_timeout_s=state.limits.body_timeout_s)
    add_error_handlers(app, state.limits)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for make in (*ROUTERS, *routers):
        app.include_router(make(state))
    return app
