"""Logging of ``radpath serve``: uvicorn's, plus radpath.serve's lines, never a secret."""

from __future__ import annotations

import copy
import logging
from typing import Any


class NoQueryString(logging.Filter):
    """Drop the query string from uvicorn's access-log lines: a token or an identifier put
    in a URL must not reach the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = args[2].split("?", 1)[0]
            record.args = (*args[:2], path, *args[3:])
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging, plus radpath.serve's lines (counts, sanitised names, timings).

    uvicorn's access log holds the method, the path without its query string and the
    status; neither logs a body.
    """
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["no_query_string"] = {
        "()": "radpath.serve.logs.NoQueryString"}
    config["handlers"]["access"]["filters"] = ["no_query_string"]
    config["loggers"]["radpath.serve"] = {"handlers": ["default"], "level": "INFO",
                                          "propagate": False}
    return config
