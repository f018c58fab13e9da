"""The contrastive loss under two gloo processes equals one process on the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from radpath.objectives.contrastive import SymmetricInfoNCE
from radpath.objectives.gather import gather_rows

ROWS = (5, 3)  # rows on rank 0 and rank 1: unequal, as an epoch's last batch can be


class _Towers(nn.Module):
    """Two linear projections and the loss (its logit scale learns too)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mammo, self.histo = nn.Linear(6, 4), nn.Linear(6, 4)
        self.loss = SymmetricInfoNCE(init_temperature=0.5)

    def forward(self, x_mammo, x_histo, labels, pairing):
        return self.loss(self.mammo(x_mammo), self.histo(x_histo), labels, pairing)


def _batch():
    gen = torch.Generator().manual_seed(1)
    n = sum(ROWS)
    x_mammo, x_histo = torch.randn(n, 6, generator=gen), torch.randn(n, 6, generator=gen)
    labels = torch.tensor([0, 2, 2, 1, 0, 2, 1, -1])
    pairing = torch.tensor([2, 2, 1, 2, 0, 1, 2, 2])  # pseudo, true and one unpaired row
    return x_mammo, x_histo, labels, pairing


def _reference():
    towers = _Towers()
    loss = towers(*_batch())
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in towers.named_parameters()}


def _worker(rank: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=len(ROWS))
    try:
        torch.set_num_threads(1)
        start = sum(ROWS[:rank])
        local = [t[start:start + ROWS[rank]] for t in _batch()]
        gathered = gather_rows(*local)
        model = DistributedDataParallel(_Towers())
        loss = model(*local)
        loss.backward()
        results[rank] = (loss.detach(), {k.removeprefix("module."): p.grad.clone()
                                         for k, p in model.named_parameters()},
                         [g.clone() for g in gathered])
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_give_the_loss_and_gradients_of_the_whole_batch():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(_free_port(), results), nprocs=len(ROWS), join=True)
        results = dict(results)
    loss, grads = _reference()
    for rank in range(len(ROWS)):
        rank_loss, rank_grads, gathered = results[rank]
        for mine, whole in zip(gathered, _batch(), strict=True):
            torch.testing.assert_close(mine, whole)  # every row, in rank order
        torch.testing.assert_close(rank_loss, loss, rtol=1e-6, atol=1e-7)
        for name, grad in grads.items():
            torch.testing.assert_close(rank_grads[name], grad, rtol=1e-5, atol=1e-7)


def test_one_process_gathers_nothing():
    x = torch.randn(3, 2, requires_grad=True)
    (same,) = gather_rows(x)
    assert same is x
