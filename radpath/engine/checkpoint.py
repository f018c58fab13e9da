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
from radpath.engine.run import SNAPSHOT_PREFIX, build_algorithm
from radpath.errors import RadpathError


@dataclass
class LoadedRun:
    """A run folder brought back to life."""

    folder: Path
    config: TrainConfig
    record: dict[str, Any]
    algorithm: Algorithm
    checkpoint: Path


# ``--checkpoint`` value that scores a run by its snapshot checkpoints (``optim.cycles``).
SNAPSHOTS = "snapshots"


def load_run(folder: str | Path, *, which: str = "best",
             device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the algorithm of ``folder``, load its ``best`` (or ``last``) weights, and
    put it on ``device`` (see :func:`radpath.engine.devices.resolve_device`)."""
    folder, config, record = _read_folder(folder)
    return _loaded(folder, config, record, _checkpoint_path(folder, record, which), device)


def load_members(folder: str | Path, *, which: str = "best",
                 device: str | torch.device = "cpu") -> list[LoadedRun]:
    """The models ``folder`` is scored with: its ``best`` or ``last`` checkpoint, or, for
    ``snapshots``, one per snapshot checkpoint in the order they were taken."""
    if which != SNAPSHOTS:
        return [load_run(folder, which=which, device=device)]
    folder, config, record = _read_folder(folder)
    snapshots = sorted((folder / "checkpoints").glob(f"{SNAPSHOT_PREFIX}*.ckpt"))
    if not snapshots:
        raise RadpathError(f"{folder}: no snapshot checkpoints (checkpoints/{SNAPSHOT_PREFIX}"
                           f"*.ckpt): they are kept when optim.cycles is above 1, and this "
                           f"run's is {config.optim.cycles}")
    return [_loaded(folder, config, record, path, device) for path in snapshots]


def _read_folder(folder: str | Path) -> tuple[Path, TrainConfig, dict[str, Any]]:
    folder = Path(folder)
    for needed in ("config.yaml", "run.json"):
        if not (folder / needed).is_file():
            raise RadpathError(f"{folder} is not a radpath run folder: {needed} is missing")
    config = validate_config(yaml.safe_load((folder / "config.yaml").read_text()) or {},
                             source=str(folder / "config.yaml"))
    return folder, config, json.loads((folder / "run.json").read_text())


def _loaded(folder: Path, config: TrainConfig, record: dict[str, Any], checkpoint: Path,
            device: str | torch.device) -> LoadedRun:
    algorithm = build_algorithm(config, record.get("domains", []), record.get("num_grades", 0))
    load_weights(algorithm, checkpoint)
    algorithm.to(resolve_device(device)).eval()
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
    candidates = {"best": [_inside(folder, record.get("best_checkpoint")),
                           folder / "checkpoints" / "best.ckpt"],
                  "last": [folder / "checkpoints" / "last.ckpt"]}
    if which not in candidates:
        raise RadpathError(f"checkpoint must be 'best' or 'last', got {which!r}")
    for candidate in candidates[which]:
        if candidate and candidate.is_file():
            return candidate
    if which == "best":
        return _checkpoint_path(folder, record, "last")
    raise RadpathError(f"{folder}: no checkpoint found under checkpoints/")


def _inside(folder: Path, recorded: str | None) -> Path | None:
    """A checkpoint path of ``run.json`` inside ``folder``, never elsewhere.

    Runs record paths relative to their folder. Older runs wrote absolute ones: those are
    read as ``checkpoints/<name>`` of this folder, so that a copied or moved run loads its
    own weights and never the original folder's.
    """
    if not recorded:
        return None
    path = Path(recorded)
    if not path.is_absolute():
        return folder / path
    try:
        return folder / path.resolve().relative_to(folder.resolve())
    except ValueError:
        return folder / "checkpoints" / path.name
