"""The benchmarks' worker processes: independent training runs side by side on few cores.

``radpath.parallel.parallel_map`` serves batch jobs (forked workers, one item each, a
progress bar); a benchmark instead runs a few long trainings, each in a fresh (spawned)
process with its own torch thread count and Lightning's banners silenced.
"""

from __future__ import annotations

import logging
import multiprocessing
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def quiet_worker(threads: int) -> None:
    """One process's torch threads; Lightning's banner lines silenced (errors still show)."""
    torch.set_num_threads(threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")


def map_in_processes(fn: Callable[..., Any], *iterables: Iterable[Any], jobs: int,
                     threads: int) -> list[Any]:
    """``list(map(fn, *iterables))``, ``jobs`` spawned processes at a time of ``threads``
    torch threads each, results in input order."""
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=quiet_worker, initargs=(threads,)) as pool:
        return list(pool.map(fn, *iterables))
