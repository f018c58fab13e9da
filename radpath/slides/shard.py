"""Split slides across distributed ranks, so no rank reads every slide.

Slides are dealt out by a greedy longest-first balance on their patch count (or 1 each when
unknown), so one rank is not left with every large slide. The assignment depends only on
the inputs, so every rank computes the same split without talking to the others.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Sequence


def shard_indices(sizes: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Indices (in input order) of the items rank ``rank`` of ``world_size`` handles.

    Args:
        sizes: a cost per item (patches per slide); ties keep the input order.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size}")
    loads = [(0, r) for r in range(world_size)]
    owners = [0] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    for index in order:
        load, owner = heapq.heappop(loads)
        owners[index] = owner
        heapq.heappush(loads, (load + max(1, int(sizes[index])), owner))
    return [i for i, owner in enumerate(owners) if owner == rank]


def current_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: torch.distributed when initialised, else the
    launcher's environment (Lightning, torchrun, SLURM), else a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank_key, world_key in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if rank_key in os.environ and world_key in os.environ:
            return int(os.environ[rank_key]), int(os.environ[world_key])
    return 0, 1
