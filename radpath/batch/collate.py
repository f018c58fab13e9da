"""Padding a list of dataset items into one batch of the contract (:mod:`radpath.batch.keys`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from radpath.batch.dataset import DataConfig
from radpath.batch.tensors import valid_rows


def _pad(tensors: Sequence[torch.Tensor], length: int, fill: float = 0
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (n_i, ...) tensors into (B, length, ...) padded with ``fill``, and the
    (B, length) mask."""
    out = torch.full((len(tensors), length, *tensors[0].shape[1:]), fill,
                     dtype=tensors[0].dtype)
    mask = torch.zeros(len(tensors), length, dtype=torch.bool)
    for b, tensor in enumerate(tensors):
        out[b, : len(tensor)] = tensor
        mask[b, : len(tensor)] = True
    return out, mask


def loader_options(config: DataConfig, seed: int, *, pin_memory: bool = False
                   ) -> dict[str, Any]:
    """DataLoader options shared by every training loader: batches, workers, generator.

    Workers persist, keeping their in-memory caches, since the epoch comes with each key.
    The generator is the loader's own: a loader draws its workers' base seed on every new
    iterator (each epoch in the main process, once with persistent workers), and drawn from
    the global generator that would shift every later global draw (masks, drop-path) by a
    number that depends on ``num_workers``. Each worker keeps torch's default two batches
    in flight, so a step rarely waits for one (``run.json``'s ``data_wait`` says how often);
    ``pin_memory`` (for a GPU) puts them in page-locked memory, whose copy to the device
    does not block the host.
    """
    return {"collate_fn": collate_patients, "num_workers": config.num_workers,
            "persistent_workers": config.num_workers > 0, "pin_memory": pin_memory,
            "generator": torch.Generator().manual_seed(seed)}


def collate_patients(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad views and tiles to the batch's longest unit (at least 1) into the batch contract.

    Returns:
        The keys of :mod:`radpath.batch.keys` with their shapes and dtypes, plus
        ``unit_id`` (a list of strings).
    """
    if not items:
        raise ValueError("collate_patients needs at least one item")
    views = max(1, *(len(item["mammo"]) for item in items))
    tiles = max(1, *(len(item["histo"]) for item in items))
    batch: dict[str, Any] = {"unit_id": [item["unit_id"] for item in items]}
    batch["mammo"], batch["mammo_mask"] = _pad([i["mammo"] for i in items], views)
    batch["histo"], batch["histo_mask"] = _pad([i["histo"] for i in items], tiles)
    batch["lesion_map"], _ = _pad([i["lesion_map"] for i in items], views)
    batch["lesion_known"], _ = _pad([i["lesion_known"] for i in items], views)
    for key in ("mammo_side", "mammo_view_label"):  # -1: no view there
        batch[key], _ = _pad([i[key] for i in items], views, fill=-1)
    for key in ("has_mammo", "has_histo", "label", "malignant", "grade", "mammo_domain",
                "histo_domain", "pairing"):
        batch[key] = torch.stack([item[key] for item in items])
    for modality in ("mammo", "histo"):
        batch[f"{modality}_rows"] = valid_rows(batch, modality)
    return batch


