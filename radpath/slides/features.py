"""Frozen-encoder features of every patch of every slide, cached so slide-level training
is cheap: ``features/<image_id>.h5`` with datasets ``features`` ``(N, D)`` and ``coords``
``(N, 2)`` (CLAM's ``h5_files`` layout). Slides are sharded across ranks
(:mod:`radpath.slides.shard`), so no rank reads every slide.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radpath.atomic import atomic_path
from radpath.slides.patches import SlidePatchDataset
from radpath.slides.shard import shard_indices


class ColourStats(nn.Module):
    """A weight-free encoder: each channel's mean and standard deviation (6 features).

    A baseline featuriser that needs no download and cannot overfit: the floor any learnt
    encoder must beat, and the encoder of the tests and the offline demo.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def build_encoder(spec: str, checkpoint: str | Path | None = None) -> nn.Module:
    """``colour-stats``, or ``timm:<model name>`` with an optional local checkpoint."""
    if spec == "colour-stats":
        return ColourStats().eval()
    if spec.startswith("timm:"):
        return timm_encoder(spec[5:], checkpoint)
    raise ValueError(f"unknown slide encoder {spec!r}; expected colour-stats or timm:<name>")


def timm_encoder(name: str, checkpoint: str | Path | None = None) -> nn.Module:
    """A frozen timm model returning pooled features (no classifier).

    Weights come only from ``checkpoint`` (safetensors, or a ``weights_only`` torch file):
    nothing is downloaded. Without one the weights are random, which is for plumbing tests
    only; say so in any result.
    """
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0)
    if checkpoint is not None:
        path = Path(checkpoint)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def encode_slide(dataset: SlidePatchDataset, encoder: nn.Module, *, batch_size: int = 32,
                 workers: int = 0, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225)) -> np.ndarray:
    """``(N, D)`` float32 features of the slide's patches, in coordinate order."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    shift = torch.tensor(mean).view(1, 3, 1, 1)
    scale = torch.tensor(std).view(1, 3, 1, 1)
    parts = [encoder((patches - shift) / scale).float().cpu().numpy() for patches, _ in loader]
    return np.concatenate(parts).astype(np.float32)


def write_features(path: str | Path, features: np.ndarray, coords: np.ndarray) -> Path:
    import h5py

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("features", data=features)
        handle.create_dataset("coords", data=coords.astype(np.int64))
    return Path(path)


def read_features(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(features, coords)`` of a cached feature file."""
    import h5py

    with h5py.File(path, "r") as handle:
        return np.asarray(handle["features"]), np.asarray(handle["coords"])


def cache_features(slides: Sequence[tuple[str, str, Path]], out_dir: str | Path,
                   encoder: nn.Module, *, rank: int = 0, world_size: int = 1,
                   batch_size: int = 32, workers: int = 0) -> list[Path]:
    """Encode this rank's share of ``slides`` (``(image_id, slide_path, coords_file)``).

    A slide whose feature file exists is skipped (a restart resumes); files are written
    atomically. Returns the files this rank wrote or found.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = [SlidePatchDataset(path, coords) for _, path, coords in slides]
    done = []
    for index in shard_indices([len(d) for d in datasets], rank, world_size):
        target = out_dir / f"{slides[index][0]}.h5"
        if not target.is_file():
            features = encode_slide(datasets[index], encoder, batch_size=batch_size,
                                    workers=workers)
            write_features(target, features, datasets[index].coords)
        done.append(target)
    return done
