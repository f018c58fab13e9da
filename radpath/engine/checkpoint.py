"""Load a trained run: its resolved config, its record and its best weights.

Checkpoints are read with ``torch.load(weights_only=True)``: a checkpoint from elsewhere
cannot run code on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from radpath.algorithms.base import Algorithm
from radpath.engine.config import TrainConfig, validate_config
from radpath.engine.devices import resolve_device
from radpath.engine.run import build_algorithm
from radpath.errors import RadpathError


@dataclass
class LoadedRun:
    """A run folder brought back to life."""

    folder: Path
    config: TrainConfig
    record: dict[str, Any]
    algorithm: Algorithm
    checkpoint: Path


def load_run(folder: str | Path, *, which: str = "best",
             device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the algorithm of ``folder``, load its ``best`` (or ``last``) weights, and
    put it on ``device`` (see :func:`radpath.engine.devices.resolve_device`)."""
    target = resolve_device(device)
    folder = Path(folder)
    for needed in ("config.yaml", "run.json"):
        if not (folder / needed).is_file():
            raise RadpathError(f"{folder} is not a radpath run folder: {needed} is missing")
    config = validate_config(yaml.safe_load((folder / "config.yaml").read_text()) or {},
                             source=str(folder / "config.yaml"))
    record = json.loads((folder / "run.json").read_text())
    checkpoint = _checkpoint_path(folder, record, which)
    algorithm = build_algorithm(config, record.get("domains", []), record.get("num_grades", 0))
    load_weights(algorithm, checkpoint)
    algorithm.to(target).eval()
    return LoadedRun(folder, config, record, algorithm, checkpoint)


def load_weights(algorithm: Algorithm, checkpoint: str | Path) -> None:
    """Load a Lightning checkpoint's algorithm weights (safely) into ``algorithm``."""
    try:
        content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, truncated, or not a checkpoint at all
        raise RadpathError(f"{checkpoint}: cannot be read as a checkpoint ({exc})") from None
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict):
        raise RadpathError(f"{checkpoint}: holds no state_dict")
    prefix = "algorithm."
    weights = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    missing, unexpected = algorithm.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise RadpathError(f"{checkpoint}: does not match the run's model (missing "
                           f"{len(missing)} keys, e.g. {missing[:3]}; unexpected "
                           f"{len(unexpected)}, e.g. {unexpected[:3]})")


def _checkpoint_path(folder: Path, record: dict[str, Any], which: str) -> Path:
    candidates = {"best": [record.get("best_checkpoint"), folder / "checkpoints" / "best.ckpt"],
                  "last": [folder / "checkpoints" / "last.ckpt"]}
    if which not in candidates:
        raise RadpathError(f"checkpoint must be 'best' or 'last', got {which!r}")
    for candidate in candidates[which]:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    if which == "best":
        return _checkpoint_path(folder, record, "last")
    raise RadpathError(f"{folder}: no checkpoint found under checkpoints/")
