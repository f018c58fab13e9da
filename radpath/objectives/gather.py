"""Rows of every rank, gathered for a loss whose negatives span the whole global batch.

Under data parallelism (``--strategy ddp``) each process holds only its own share of a
batch; a contrastive loss computed on it sees ``1 / world`` of the negatives. As in
open_clip's ``ClipLoss(gather_with_grad=True)``, the embeddings of every rank are gathered
*with their gradients* (``torch.distributed.nn``), every rank computes the loss of the
whole global batch, and the all-gather's backward sums each rank's gradient back to its
own rows; DDP's average of the parameter gradients then equals the gradient of one
process holding the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_size() -> int:
    """Processes in the default group, or 1 without an initialised process group."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Each tensor's rows of every rank, in rank order (the tensors themselves alone).

    Ranks may hold different numbers of rows (the last batch of an epoch): rows are padded
    to the longest share for the collective, then cut back. Floating tensors keep their
    gradients; the others (labels, codes) are gathered as plain values.
    """
    if world_size() == 1:
        return tensors
    count = torch.tensor([len(tensors[0])], device=tensors[0].device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    return tuple(_gather(t, sizes) for t in tensors)


def _gather(tensor: Tensor, sizes: list[int]) -> Tensor:
    padding = tensor.new_zeros((max(sizes) - len(tensor), *tensor.shape[1:]))
    padded = torch.cat([tensor, padding])
    if padded.is_floating_point():
        from torch.distributed.nn.functional import all_gather

        parts = all_gather(padded)
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])
