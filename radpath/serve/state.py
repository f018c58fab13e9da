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
        thresholds: per output, the operating threshold shown beside its probability
            (:func:`radpath.serve.thresholds.read_thresholds`).
    """

    run: Any
    token: str | None
    limits: Limits
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    map_kinds: tuple[str, ...] = ("localisation",)
    pending: int = 0
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)

    def model_info(self) -> dict[str, Any]:
        """What the run is, without any path: the folder's base name only, and its name."""
        record, config = self.run.record, self.run.config
        return {"run": Path(self.run.folder).name, "name": run_name(self.run.folder),
                "started": record.get("started"), "algorithm": record.get("algorithm"),
                "backbone": config.model.backbone.name,
                "pairing_mode": record.get("pairing_mode"),
                "git_commit": record.get("git_commit"), "radpath_version": version()}


def run_name(folder: str | Path) -> str:
    """A run's name for people: its folder's name, with the parent's when the folder is
    the default ``run`` (``demo-out/run``), so the header does not read "run run"."""
    folder = Path(folder).resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name == "run" else folder.name


def version() -> str:
    from radpath import __version__

    return __version__
