"""What every router of the server shares: the loaded run, the token, the limits."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radpath.serve.limits import Limits


@dataclass
class ServerState:
    """The server's state, built once by :func:`radpath.serve.create_app`.

    Attributes:
        run: the loaded run (:class:`radpath.engine.checkpoint.LoadedRun`).
        token: the bearer token ``POST`` routes need, or None.
        limits: the request limits.
        model_lock: explaining switches model state (fused attention off, hooks): one
            case at a time.
        map_kinds: the explanation map kinds a case may ask for.
        pending: cases accepted and not yet answered.
    """

    run: Any
    token: str | None
    limits: Limits
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    map_kinds: tuple[str, ...] = ("localisation",)
    pending: int = 0

    def model_info(self) -> dict[str, Any]:
        """What the run is, without any path: the folder's base name only."""
        record, config = self.run.record, self.run.config
        return {"run": Path(self.run.folder).name, "algorithm": record.get("algorithm"),
                "backbone": config.model.backbone.name,
                "pairing_mode": record.get("pairing_mode"),
                "git_commit": record.get("git_commit"), "radpath_version": version()}


def version() -> str:
    from radpath import __version__

    return __version__
