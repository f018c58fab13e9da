"""What one request to the server may ask of it: bytes, files, pixels and seconds."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """Request limits of the radpath server; every one is enforced with a clear 4xx/5xx.

    Attributes:
        max_request_bytes: the largest request body. Checked on ``Content-Length`` before
            the body is read, and again while it is read (a client may omit or lie about it).
        max_files_per_field: the most files in ``mammo`` or in ``histo``.
        max_pixels: the largest height x width of one image, checked from its header before
            its pixels are decoded (a guard against decompression bombs).
        timeout_s: the longest one case may take, queueing included (504 beyond).
        body_timeout_s: the longest a request body may take to arrive, all of it (408 and
            the connection closed beyond): a client sending a byte a second cannot hold a
            connection.
        max_pending: cases accepted at once, running or waiting for the model; more are
            refused with 503 rather than queued without end.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_files_per_field: int = Field(16, ge=1)
    # Ten times the 4,600 x 2,800 of a digitised CBIS-DDSM film would still be refused;
    # a full-field digital mammogram (about 4,700 x 3,000) passes.
    max_pixels: int = Field(40_000_000, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    # 64 MB at 20 Mbit/s takes about 27 s.
    body_timeout_s: float = Field(30.0, gt=0)
    max_pending: int = Field(8, ge=1)
