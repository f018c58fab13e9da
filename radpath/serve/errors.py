"""The server's refusals, each answered as JSON ``{"detail": ...}`` with its status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from radpath.serve.limits import Limits

logger = logging.getLogger("radpath.serve")


class CaseError(Exception):
    """A request the server refuses: becomes ``{"detail": ...}`` with ``status``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


class BodyTooLarge(Exception):
    """Raised from ``receive`` once a body grows past the limit while it is read."""


class BodyTimeout(Exception):
    """Raised from ``receive`` when a body has not arrived whole within the limit."""


def case_error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CaseError)
    if exc.status >= 500 or exc.status in (401, 408, 413):
        logger.warning("case refused (%d): %s", exc.status, exc.detail)
    else:
        logger.info("case refused (%d): %s", exc.status, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def too_large_error(limits: Limits) -> CaseError:
    # The rest of the body is not read: the connection must close after the answer.
    return CaseError(413, f"request body exceeds the limit of {limits.max_request_bytes:,} "
                          "bytes (max_request_bytes)", {"Connection": "close"})


def body_timeout_error(limits: Limits) -> CaseError:
    return CaseError(408, f"the request body did not arrive within {limits.body_timeout_s:g} s "
                          "(body_timeout_s); the connection is closed", {"Connection": "close"})


def disconnected(_request: Request, _exc: Exception) -> JSONResponse:
    """A client gone mid-request: one log line, not a traceback; the answer goes nowhere."""
    assert isinstance(_exc, ClientDisconnect)
    logger.info("client disconnected before the request was complete")
    return JSONResponse({"detail": "client disconnected"}, status_code=400,
                        headers={"Connection": "close"})


def add_error_handlers(app: FastAPI, limits: Limits) -> None:
    """Every refusal, a gone client, an oversized or stalled body: JSON answers."""
    app.add_exception_handler(CaseError, case_error_response)
    app.add_exception_handler(ClientDisconnect, disconnected)
    app.add_exception_handler(
        BodyTooLarge, lambda r, _e: case_error_response(r, too_large_error(limits)))
    app.add_exception_handler(
        BodyTimeout, lambda r, _e: case_error_response(r, body_timeout_error(limits)))
