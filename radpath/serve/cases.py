"""``POST /v1/cases``: a patient's mammograms (and histology) in, an explanation out.

Every bad input is answered with a 4xx whose ``detail`` names the file (by its sanitised
upload name) and the problem, never echoing a text field's value; the server keeps
serving. Uploads live in a private temporary folder deleted after the request.
"""

from __future__ import annotations

import base64
import logging
import secrets
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from radpath.errors import ImageReadError, RadpathError
from radpath.serve.errors import (
    BodyTimeout,
    BodyTooLarge,
    CaseError,
    body_timeout_error,
    too_large_error,
)
from radpath.serve.openapi import MAX_TOP_K, PAIRINGS, case_openapi
from radpath.serve.privacy import identifiers, safe_name, scrub, unpath, walk_strings
from radpath.serve.state import ServerState

logger = logging.getLogger("radpath.serve")
FIELDS = ("mammo", "histo")
_TOP_K = [str(k) for k in range(1, MAX_TOP_K + 1)]


def router(state: ServerState) -> APIRouter:
    """The case route of the server of ``state``."""
    routes = APIRouter()

    @routes.post("/v1/cases", summary="Explain one case",
                 openapi_extra=case_openapi(state.map_kinds))
    async def cases(request: Request) -> JSONResponse:
        check_token(request, state.token)
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
        except BodyTooLarge:
            raise too_large_error(state.limits) from None
        except BodyTimeout:
            raise body_timeout_error(state.limits) from None
        logger.info("case explained: %d mammogram(s), %d histology file(s), %.2f s",
                    len(job.uploads["mammo"]), len(job.uploads["histo"]),
                    time.perf_counter() - started)
        return JSONResponse(payload)

    return routes


def check_token(request: Request, token: str | None) -> None:
    """Refuse (401) a request without ``Authorization: Bearer <token>`` when one is set."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(),
                                                                token.encode()):
        raise CaseError(401, "missing or wrong bearer token: send the header "
                             "'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})


# --------------------------------------------------------------------------- the form


@dataclass
class _Job:
    """One case, parsed from the form; its files are written and read in a worker thread."""

    uploads: dict[str, list[tuple[str, UploadFile]]]
    pairing: str
    top_k: int
    map_kind: str


def _parse_form(form: Any, state: ServerState) -> _Job:
    uploads = {name: [(safe_name(item.filename, i), item)
                      for i, item in enumerate(_files(form, name))] for name in FIELDS}
    if not uploads["mammo"]:
        raise CaseError(422, "no mammogram: send one or more image files (DICOM, PNG, PGM, "
                             "TIFF) in the multipart field 'mammo'")
    for name, items in uploads.items():
        if len(items) > state.limits.max_files_per_field:
            raise CaseError(413, f"{len(items)} files in '{name}' exceed the limit of "
                                 f"{state.limits.max_files_per_field} (max_files_per_field)")
    pairing = _choice(form, "pairing", "none", PAIRINGS)
    top_k = _choice(form, "top_k", "3", _TOP_K, what=f"a whole number from 1 to {MAX_TOP_K}")
    map_kind = _choice(form, "map_kind", "localisation", state.map_kinds)
    return _Job(uploads, pairing, int(top_k), map_kind)


def _choice(form: Any, name: str, default: str, allowed: Any, what: str = "") -> str:
    """A text field's value among ``allowed``; the value itself is never echoed back (a
    client could put anything there, an identifier included)."""
    value = _text(form, name, default)
    if value not in allowed:
        raise CaseError(422, f"{name} must be {what or 'one of ' + ', '.join(allowed)}; got "
                             f"another value ({len(value)} characters)")
    return value


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


# --------------------------------------------------------------------------- running a case


async def _run_job(job: _Job, state: ServerState) -> dict[str, Any]:
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


def _explain_job(job: _Job, state: ServerState, deadline: float) -> dict[str, Any]:
    """Worker thread: save the uploads privately, check them, explain, render, clean up."""
    folder = Path(tempfile.mkdtemp(prefix="radpath-case-"))  # mode 0700
    try:
        files = _save(job, folder)
        found = identifiers(files)
        names = {str(path): name for paths in files.values() for path, name in paths}
        # In error messages a server path becomes "mammo file 'name'".
        labels = {str(path): f"{key} file '{name}'" for key, paths in files.items()
                  for path, name in paths}

        def clean(text: str) -> str:
            return scrub(unpath(text, names, folder), found)

        try:
            _check_images(files, state.limits.max_pixels)
            payload = _explain_locked(job, state, files, deadline)
        except CaseError as exc:
            detail = scrub(unpath(exc.detail, labels, folder), found)
            raise CaseError(exc.status, detail, exc.headers) from None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a radpath bug or a decoder panic: log where, plainly
            where = "".join(traceback.format_tb(exc.__traceback__)[-3:])
            logger.error("case failed: %s\n%s", clean(f"{type(exc).__name__}: {exc}"),
                         clean(where))
            raise CaseError(500, "internal error while explaining the case (the server log "
                                 "says where); the input may be fine") from None
        payload["inputs"] = {key: [name for _, name in paths] for key, paths in files.items()}
        return walk_strings(payload, clean)
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
    """Check every upload's pixel count from its header, before any pixel is decoded;
    then that each histology file is a colour image (not a grey picture saved as RGB)."""
    from radpath.data.ingest import modality_problem
    from radpath.data.io import image_size, read_image

    for key, paths in files.items():
        for path, name in paths:
            try:
                height, width = image_size(path)
            except ImageReadError as exc:
                raise CaseError(status_of(exc.reason), f"{key} file '{name}': "
                                                       f"{exc.reason}") from None
            if height * width > max_pixels:
                raise CaseError(413, f"{key} file '{name}': {height} x {width} = "
                                     f"{height * width:,} pixels exceeds the limit of "
                                     f"{max_pixels:,} (max_pixels)")
    for path, name in files["histo"]:
        try:
            image = read_image(path, max_pixels=max_pixels)
        except ImageReadError as exc:
            raise CaseError(status_of(exc.reason), f"histo file '{name}': {exc.reason}") from None
        # A greyscale file is refused by explain_case itself, in its own words.
        if image.kind == "rgb" and (problem := modality_problem(image.pixels, "rgb", "histo")):
            raise CaseError(422, f"histo file '{name}': {problem}")


def status_of(reason: str) -> int:
    """The status of an image that cannot be read, from the reader's reason."""
    if "exceeds the limit" in reason or "decompression-bomb" in reason:
        return 413
    if reason.startswith(("not an image", "not a DICOM file")):
        return 415
    return 422


def _explain_locked(job: _Job, state: ServerState, files: dict[str, list[tuple[Path, str]]],
                    deadline: float) -> dict[str, Any]:
    if not state.model_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
        raise CaseError(504, "timed out waiting for the model (timeout_s)")
    try:
        if time.monotonic() > deadline:  # the request has already been answered with 504
            raise CaseError(504, "timed out waiting for the model (timeout_s)")
        return _explain(job, state, files)
    finally:
        state.model_lock.release()


def _explain(job: _Job, state: ServerState,
             files: dict[str, list[tuple[Path, str]]]) -> dict[str, Any]:
    from radpath.explain.case import explain_case
    from radpath.serve.thresholds import DEFAULT

    fused = state.thresholds.get("fused", DEFAULT)
    try:
        explanation = explain_case(state.run, [p for p, _ in files["mammo"]],
                                   [p for p, _ in files["histo"]], top_k=job.top_k,
                                   map_kind=job.map_kind, pairing=job.pairing,
                                   threshold=fused["threshold"], threshold_source=fused["from"])
    except ImageReadError as exc:
        raise CaseError(status_of(exc.reason), str(exc)) from None
    except (RadpathError, ValueError) as exc:  # inputs already checked: the message says why
        raise CaseError(422, str(exc)) from None
    payload = explanation.to_json()
    payload["images"] = _images(explanation, payload, [p for p, _ in files["mammo"]])
    payload["thresholds"] = state.thresholds
    return payload


def full_resolution_png(path: Path) -> bytes:
    """The mammogram at its own size as an 8-bit grey PNG: pixels only, re-encoded, so no
    DICOM header (nor any other metadata of the upload) can travel with it."""
    import numpy as np

    from radpath.explain.case import read_mammogram
    from radpath.explain.render import png

    pixels = read_mammogram(path)
    return png(np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8))


def _images(explanation: Any, payload: dict[str, Any], mammograms: list[Path]
            ) -> dict[str, Any]:
    # "full" feeds the deep-zoom viewer; the others are at most 1024 px on the long side.
    views = [{"base": _data_url(explanation.base_png(i)),
              "heatmap": _data_url(explanation.heatmap_png(i)),
              "overlay": _data_url(explanation.overlay_png(i)),
              "full": _data_url(full_resolution_png(path))}
             for i, path in enumerate(mammograms[:len(payload.get("views", []))])]
    tiles = [_data_url(explanation.tile_png(i)) for i in range(len(payload.get("tiles", [])))]
    return {"views": views, "tiles": tiles, "figure": _data_url(explanation.figure_png())}


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
