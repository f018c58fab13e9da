"""The radpath HTTP server: one trained run, explained case by case, and its web viewer.

``POST /v1/cases`` takes a patient's mammograms (and histology tiles, when a biopsy
exists), explains the model's decision and returns the explanation JSON with its images
as PNG data URLs. Every bad input is answered with a 4xx whose ``detail`` names the file
(by its sanitised upload name) and the problem; the server keeps serving.

Privacy: uploads live in a private temporary folder deleted after the request; a DICOM's
identifying tag values are scrubbed from every response and log line; logs never hold a
request body, only counts, sanitised file names and timings.
"""

from __future__ import annotations

import base64
import logging
import math
import re
import secrets
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from radpath.errors import ImageReadError, RadpathError
from radpath.serve.limits import Limits

logger = logging.getLogger("radpath.serve")

STATIC = Path(__file__).parent / "static"
PAIRINGS = ("none", "true", "pseudo")
FIELDS = ("mammo", "histo")
_MAX_TOP_K = 20
# Only the viewer's own files: no inline script, no CDN, images from data: and blob: URLs.
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'")


class CaseError(Exception):
    """A request the server refuses: becomes ``{"detail": ...}`` with ``status``."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers


class _BodyTooLarge(Exception):
    """Raised from ``receive`` once a body grows past the limit while it is read."""


# --------------------------------------------------------------------------- the app


def create_app(run_dir: str | Path, *, token: str | None = None,
               limits: Limits | None = None, threads: int | None = None) -> FastAPI:
    """The server of one trained run.

    Args:
        run_dir: a run folder written by ``radpath train``; loaded once, here.
        token: when given, ``POST /v1/cases`` needs ``Authorization: Bearer <token>``.
        limits: request limits (:class:`~radpath.serve.limits.Limits`; None: defaults).
        threads: torch CPU threads (``torch.set_num_threads``); None keeps torch's default.

    Raises:
        RadpathError: ``run_dir`` is not a loadable run folder.
    """
    from radpath.engine.checkpoint import load_run

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    from radpath.explain.case import MAP_KINDS

    state = _State(load_run(run_dir), token or None, limits or Limits(),
                   map_kinds=tuple(MAP_KINDS))
    limits = state.limits
    app = FastAPI(title="radpath", version=_version(),
                  summary="Explain a breast case: mammograms, optional histology tiles.")
    app.state.radpath = state
    app.add_middleware(_Guard, max_bytes=limits.max_request_bytes)
    app.add_exception_handler(CaseError, _case_error_response)
    app.add_exception_handler(_BodyTooLarge,
                              lambda r, _e: _case_error_response(r, _too_large_error(limits)))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_routes(app, state)
    return app


@dataclass
class _State:
    run: Any  # radpath.engine.checkpoint.LoadedRun
    token: str | None
    limits: Limits
    # explain_case switches model state (fused attention off, hooks): one case at a time.
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    map_kinds: tuple[str, ...] = ("localisation",)
    pending: int = 0

    def model_info(self) -> dict[str, Any]:
        """What the run is, without any path: the folder's base name only."""
        record, config = self.run.record, self.run.config
        return {"run": Path(self.run.folder).name, "algorithm": record.get("algorithm"),
                "backbone": config.model.backbone.name,
                "pairing_mode": record.get("pairing_mode"),
                "git_commit": record.get("git_commit"), "radpath_version": _version()}


def _add_routes(app: FastAPI, state: _State) -> None:
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/v1/health", summary="Liveness and the model served")
    def health() -> dict[str, Any]:
        limits = state.limits.model_dump(include={"max_request_bytes", "max_files_per_field",
                                                  "max_pixels", "timeout_s"})
        return {"status": "ok", "model": state.model_info(), "limits": limits}

    @app.post("/v1/cases", summary="Explain one case",
              openapi_extra=_case_openapi(state.map_kinds))
    async def cases(request: Request) -> JSONResponse:
        _check_token(request, state.token)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise CaseError(415, "send the case as multipart/form-data with one or more "
                                 "files in the field 'mammo' (and optionally 'histo')")
        started = time.perf_counter()
        try:
            async with request.form(max_files=2 * state.limits.max_files_per_field + 1,
                                    max_fields=16) as form:
                job = _parse_form(form, state)
                payload = await _run_job(job, state)
        except _BodyTooLarge:
            raise _too_large_error(state.limits) from None
        logger.info("case explained: %d mammogram(s), %d histology file(s), %.2f s",
                    len(job.uploads["mammo"]), len(job.uploads["histo"]),
                    time.perf_counter() - started)
        return JSONResponse(payload)


def _check_token(request: Request, token: str | None) -> None:
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(),
                                                                token.encode()):
        raise CaseError(401, "missing or wrong bearer token: send the header "
                             "'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})


def _case_error_response(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CaseError)
    if exc.status >= 500 or exc.status in (401, 413):
        logger.warning("case refused (%d): %s", exc.status, exc.detail)
    else:
        logger.info("case refused (%d): %s", exc.status, exc.detail)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)


def _too_large_error(limits: Limits) -> CaseError:
    return CaseError(413, f"request body exceeds the limit of {limits.max_request_bytes:,} "
                          "bytes (max_request_bytes)")


# --------------------------------------------------------------------------- the form


@dataclass
class _Job:
    """One case, parsed from the form; its files are written and read in a worker thread."""

    uploads: dict[str, list[tuple[str, UploadFile]]]
    pairing: str
    top_k: int
    map_kind: str


def _parse_form(form: Any, state: _State) -> _Job:
    uploads = {name: [(_safe_name(item.filename, i), item)
                      for i, item in enumerate(_files(form, name))] for name in FIELDS}
    if not uploads["mammo"]:
        raise CaseError(422, "no mammogram: send one or more image files (DICOM, PNG, PGM, "
                             "TIFF) in the multipart field 'mammo'")
    for name, items in uploads.items():
        if len(items) > state.limits.max_files_per_field:
            raise CaseError(413, f"{len(items)} files in '{name}' exceed the limit of "
                                 f"{state.limits.max_files_per_field} (max_files_per_field)")
    pairing = _text(form, "pairing", "none")
    if pairing not in PAIRINGS:
        raise CaseError(422, f"pairing must be one of {', '.join(PAIRINGS)}, got "
                             f"{_clip(pairing)!r}")
    top_k = _text(form, "top_k", "3")
    if not re.fullmatch(r"\d{1,3}", top_k) or not 1 <= int(top_k) <= _MAX_TOP_K:
        raise CaseError(422, f"top_k must be a whole number from 1 to {_MAX_TOP_K}, got "
                             f"{_clip(top_k)!r}")
    map_kind = _text(form, "map_kind", "localisation")
    if map_kind not in state.map_kinds:
        raise CaseError(422, f"map_kind must be one of {', '.join(state.map_kinds)}, got "
                             f"{_clip(map_kind)!r}")
    return _Job(uploads, pairing, int(top_k), map_kind)


def _files(form: Any, name: str) -> list[UploadFile]:
    items = form.getlist(name)
    for item in items:
        if not isinstance(item, UploadFile):
            raise CaseError(422, f"'{name}' must hold file uploads (multipart parts with a "
                                 "filename), not text")
    return items


def _text(form: Any, name: str, default: str) -> str:
    values = form.getlist(name)
    if len(values) > 1:
        raise CaseError(422, f"'{name}' was given {len(values)} times; give it once")
    if not values:
        return default
    if not isinstance(values[0], str):
        raise CaseError(422, f"'{name}' must be a text field, not a file")
    return values[0].strip() or default


def _clip(text: str, length: int = 40) -> str:
    return text if len(text) <= length else text[:length] + "..."


def _safe_name(raw: str | None, index: int) -> str:
    """The client's file base name, reduced to ``[A-Za-z0-9._-]`` and 80 characters."""
    base = re.split(r"[\\/]", raw or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or f"upload-{index + 1}"
    if len(base) > 80:
        stem, dot, suffix = base.rpartition(".")
        base = (stem[:70] + dot + suffix[:9]) if dot and len(suffix) <= 9 else base[:80]
    return base


# --------------------------------------------------------------------------- running a case


async def _run_job(job: _Job, state: _State) -> dict[str, Any]:
    limits = state.limits
    if state.pending >= limits.max_pending:
        raise CaseError(503, f"the server is busy ({state.pending} cases in progress); "
                             "try again shortly", {"Retry-After": "5"})
    state.pending += 1
    deadline = time.monotonic() + limits.timeout_s
    try:
        with anyio.fail_after(limits.timeout_s):
            # Abandoned on timeout: the thread cannot be killed; it finishes, then cleans up.
            return await anyio.to_thread.run_sync(_explain_job, job, state, deadline,
                                                  abandon_on_cancel=True)
    except TimeoutError:
        raise CaseError(504, f"the case took longer than {limits.timeout_s:g} s (timeout_s); "
                             "send fewer or smaller images, or try again") from None
    finally:
        state.pending -= 1


def _explain_job(job: _Job, state: _State, deadline: float) -> dict[str, Any]:
    """Worker thread: save the uploads privately, check them, explain, render, clean up."""
    folder = Path(tempfile.mkdtemp(prefix="radpath-case-"))  # mode 0700
    try:
        files = _save(job, folder)
        found = _identifiers(files)
        names = {str(path): name for paths in files.values() for path, name in paths}
        # In error messages a server path becomes "mammo file 'name'".
        labels = {str(path): f"{key} file '{name}'" for key, paths in files.items()
                  for path, name in paths}

        def clean(text: str) -> str:
            return _scrub(_unpath(text, names, folder), found)

        try:
            _check_images(files, state.limits.max_pixels)
            payload = _explain_locked(job, state, files, deadline)
        except CaseError as exc:
            detail = _scrub(_unpath(exc.detail, labels, folder), found)
            raise CaseError(exc.status, detail, exc.headers) from None
        except Exception as exc:  # a radpath bug: log where (no locals), answer plainly
            where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
            logger.error("case failed: %s\n%s", clean(f"{type(exc).__name__}: {exc}"),
                         clean(where))
            raise CaseError(500, "internal error while explaining the case (the server log "
                                 "says where); the input may be fine") from None
        payload["inputs"] = {key: [name for _, name in paths] for key, paths in files.items()}
        return _walk_strings(payload, clean)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _save(job: _Job, folder: Path) -> dict[str, list[tuple[Path, str]]]:
    files: dict[str, list[tuple[Path, str]]] = {}
    for key, items in job.uploads.items():
        files[key] = []
        for index, (name, upload) in enumerate(items):
            # One sub-folder per file: two uploads with the same name stay apart.
            path = folder / key / str(index) / name
            path.parent.mkdir(parents=True)
            upload.file.seek(0)
            with path.open("wb") as out:
                shutil.copyfileobj(upload.file, out, 1 << 20)
            if path.stat().st_size == 0:
                raise CaseError(422, f"{key} file '{name}': empty file (0 bytes)")
            files[key].append((path, name))
    return files


def _check_images(files: dict[str, list[tuple[Path, str]]], max_pixels: int) -> None:
    """Check every upload's pixel count from its header, before any pixel is decoded."""
    from radpath.data.io import image_size

    for key, paths in files.items():
        for path, name in paths:
            try:
                height, width = image_size(path)
            except ImageReadError as exc:
                raise CaseError(_status_of(exc.reason), f"{key} file '{name}': "
                                                        f"{exc.reason}") from None
            if height * width > max_pixels:
                raise CaseError(413, f"{key} file '{name}': {height} x {width} = "
                                     f"{height * width:,} pixels exceeds the limit of "
                                     f"{max_pixels:,} (max_pixels)")


def _status_of(reason: str) -> int:
    if "exceeds the limit" in reason or "decompression-bomb" in reason:
        return 413
    if reason.startswith(("not an image", "not a DICOM file")):
        return 415
    return 422


def _explain_locked(job: _Job, state: _State, files: dict[str, list[tuple[Path, str]]],
                    deadline: float) -> dict[str, Any]:
    if not state.model_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise CaseError(504, "timed out waiting for the model (timeout_s)")
    try:
        if time.monotonic() > deadline:  # the request has already been answered with 504
            raise CaseError(504, "timed out waiting for the model (timeout_s)")
        return _explain(job, state, files)
    finally:
        state.model_lock.release()


def _explain(job: _Job, state: _State,
             files: dict[str, list[tuple[Path, str]]]) -> dict[str, Any]:
    from radpath.explain.case import explain_case

    try:
        explanation = explain_case(state.run, [p for p, _ in files["mammo"]],
                                   [p for p, _ in files["histo"]], top_k=job.top_k,
                                   map_kind=job.map_kind, pairing=job.pairing)
    except ImageReadError as exc:
        raise CaseError(_status_of(exc.reason), str(exc)) from None
    except (RadpathError, ValueError) as exc:  # inputs already checked: the message says why
        raise CaseError(422, str(exc)) from None
    payload = explanation.to_json()
    payload["images"] = _images(explanation, payload)
    return payload


def _images(explanation: Any, payload: dict[str, Any]) -> dict[str, Any]:
    views = [{"base": _data_url(explanation.base_png(i)),
              "heatmap": _data_url(explanation.heatmap_png(i)),
              "overlay": _data_url(explanation.overlay_png(i))}
             for i in range(len(payload.get("views", [])))]
    tiles = [_data_url(explanation.tile_png(i)) for i in range(len(payload.get("tiles", [])))]
    return {"views": views, "tiles": tiles, "figure": _data_url(explanation.figure_png())}


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- privacy


def _identifiers(files: dict[str, list[tuple[Path, str]]]) -> list[str]:
    """Identifying DICOM tag values of the uploads (and a person name's parts), to scrub."""
    from radpath.data.io import IDENTIFYING_TAGS, read_dicom_header

    found: set[str] = set()
    for paths in files.values():
        for path, _ in paths:
            try:
                header = read_dicom_header(path)
            except ImageReadError:
                continue  # not DICOM (or unreadable: then nothing of it is shown)
            for keyword in IDENTIFYING_TAGS:
                try:
                    value = str(header.get(keyword, "") or "")
                except Exception:  # a malformed value: it cannot be shown either
                    continue
                found.update(part for part in (value, *re.split(r"[\^=]", value))
                             if len(part.strip()) >= 3)
    return sorted(found, key=len, reverse=True)


def _scrub(text: str, values: Sequence[str]) -> str:
    for value in values:
        text = text.replace(value, "<redacted>")
    return text


def _unpath(text: str, names: dict[str, str], folder: Path) -> str:
    """Server paths of the uploads replaced by the client's sanitised names."""
    for path, name in names.items():
        text = text.replace(path, name)
    return text.replace(str(folder), "<upload>")


def _walk_strings(value: Any, clean: Callable[[str], str]) -> Any:
    """Apply ``clean`` to every string; non-finite floats become None (strict JSON)."""
    if isinstance(value, str):
        return value if value.startswith("data:image/png;base64,") else clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _walk_strings(v, clean) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_walk_strings(v, clean) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- middleware


class _Guard:
    """Body size limit (``Content-Length`` first, then while reading) and security headers."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

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
        await self.app(scope, self._counting(receive), self._with_headers(send))

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        return counted

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer"),
                         (b"content-security-policy", _CSP.encode())]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return sending

    async def _refuse(self, status: int, detail: str, scope: Scope, receive: Receive,
                      send: Send) -> None:
        logger.warning("request refused (%d): %s", status, detail)
        await JSONResponse({"detail": detail}, status_code=status,
                           headers={"Connection": "close"})(scope, receive,
                                                            self._with_headers(send))


def _version() -> str:
    from radpath import __version__

    return __version__


_BINARY_LIST = {"type": "array", "items": {"type": "string", "format": "binary"}}
_ERROR = {"application/json": {"schema": {"type": "object",
                                          "properties": {"detail": {"type": "string"}}}}}
_ERRORS = ((401, "Missing or wrong bearer token"),
           (413, "Request, file count or image too large"),
           (415, "Not multipart, or a file that is not an image"),
           (422, "A corrupt, truncated or wrong-kind image, or a missing or bad field"),
           (503, "Busy: too many cases in progress"), (504, "The case timed out"))


def _case_openapi(map_kinds: Sequence[str]) -> dict[str, Any]:
    """The multipart body of ``POST /v1/cases`` (the handler parses it itself)."""
    properties = {
        "mammo": {**_BINARY_LIST, "minItems": 1,
                  "description": "Mammograms of one patient: DICOM, PNG, PGM or TIFF."},
        "histo": {**_BINARY_LIST, "description": "H&E histology images (RGB), optional."},
        "pairing": {"type": "string", "enum": list(PAIRINGS), "default": "none",
                    "description": "'pseudo' when the histology is from another patient."},
        "top_k": {"type": "integer", "minimum": 1, "maximum": _MAX_TOP_K, "default": 3},
        "map_kind": {"type": "string", "enum": list(map_kinds), "default": "localisation"},
    }
    schema = {"type": "object", "required": ["mammo"], "properties": properties}
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}},
            "responses": {str(code): {"description": text, "content": _ERROR}
                          for code, text in _ERRORS}}
