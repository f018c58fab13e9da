"""The outermost layer of the app: body size and time limits, security headers, and a
JSON answer (with a one-line log, no traceback) for anything that escapes the routes."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import anyio
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radpath.serve.errors import BodyTimeout, BodyTooLarge

logger = logging.getLogger("radpath.serve")

# Only the viewer's own files: no inline script, no CDN, images from data: and blob: URLs.
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")
_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"),
                     (b"referrer-policy", b"no-referrer"),
                     (b"content-security-policy", CSP.encode())]
# Exceptions that stop the server on purpose, or cancel a task: never answered here.
_CONTROL_FLOW = (KeyboardInterrupt, SystemExit, GeneratorExit)


class Guard:
    """Body size limit (``Content-Length`` first, then while reading), body deadline,
    security headers, and JSON 500s."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, body_timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        if declared and (not declared.isdigit() or int(declared) > self.max_bytes):
            status = 400 if not declared.isdigit() else 413
            detail = ("invalid Content-Length header" if status == 400 else
                      f"request body of {int(declared):,} bytes exceeds the limit of "
                      f"{self.max_bytes:,} bytes (max_request_bytes)")
            await self._refuse(status, detail, scope, receive, send)
            return
        started = {"response": False}
        sending = self._with_headers(send, started)
        try:
            await self.app(scope, self._bounded(receive), sending)
        except _CONTROL_FLOW:
            raise
        except BaseException as exc:
            if type(exc).__name__ == "CancelledError" or isinstance(exc, anyio.ClosedResourceError):
                raise
            _log_failure(exc)
            if not started["response"]:
                await JSONResponse({"detail": "internal error (the server log says where); "
                                              "the input may be fine"}, status_code=500,
                                   headers={"Connection": "close"})(scope, receive, sending)

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that counts the body and allows it ``body_timeout_s`` in all."""
        seen = 0
        deadline: float | None = None
        complete = False

        async def bounded() -> Message:
            nonlocal seen, deadline, complete
            if complete:  # after the body: disconnect polling, no deadline
                return await receive()
            if deadline is None:
                deadline = anyio.current_time() + self.body_timeout_s
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())) as scope:
                message = await receive()
            if scope.cancelled_caught:
                raise BodyTimeout
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        return bounded

    @staticmethod
    def _with_headers(send: Send, started: dict[str, bool] | None = None) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                if started is not None:
                    started["response"] = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  *_SECURITY_HEADERS]}
            await send(message)

        return sending

    async def _refuse(self, status: int, detail: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        logger.warning("request refused (%d): %s", status, detail)
        await JSONResponse({"detail": detail}, status_code=status,
                           headers={"Connection": "close"})(scope, receive,
                                                            self._with_headers(send))


def _log_failure(exc: BaseException) -> None:
    """One line: the exception type and where it was raised (file and line, no values: a
    message or a local could hold an identifier)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "unknown"
    logger.error("request failed: %s at %s", type(exc).__name__, where)
