"""Run a function over many items in worker processes, with a progress bar.

Results come back in input order. With ``workers <= 1`` everything runs in this process,
which keeps tests and debugging simple and deterministic. Workers leave when their parent
dies, even by SIGKILL: a pool's workers otherwise wait on their task queue for ever.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The CPUs this process may use (respects affinity masks and containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def progress_bar(*, enabled: bool = True) -> Progress:
    """The progress bar every radpath batch job shows."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False,
    )


def parallel_map(fn: Callable[[T], R], items: Sequence[T], *, workers: int | None = None,
                 description: str = "working", progress: bool = True,
                 on_crash: Callable[[T], R] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, over ``workers`` processes, in order.

    ``fn`` must be picklable (a module-level function) and should return, not raise, its
    per-item failures, so that one bad file never stops a batch.

    Args:
        on_crash: the result of an item whose worker process died on it (a segmentation
            fault in a C decoder, the out-of-memory killer). Given, the items left when a
            worker dies are run again one per fresh process, so that only the culprits
            get this result; None, the pool's ``BrokenProcessPool`` is raised.
    """
    workers = default_workers() if workers is None else workers
    results: list[R] = []
    with progress_bar(enabled=progress) as bar:
        task = bar.add_task(description, total=len(items))
        for result in _results(fn, items, workers, on_crash):
            results.append(result)
            bar.advance(task)
    return results


def _results(fn: Callable[[T], R], items: Sequence[T], workers: int,
             on_crash: Callable[[T], R] | None) -> Iterable[R]:
    if workers <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    # Chunks amortise inter-process traffic on large cohorts yet keep the bar moving.
    chunksize = max(1, min(64, len(items) // (workers * 8)))
    done = 0
    try:
        with _pool(workers) as pool:
            for result in pool.map(fn, items, chunksize=chunksize):
                done += 1
                yield result
    except BrokenProcessPool:
        if on_crash is None:
            raise
        for item in items[done:]:
            yield _alone(fn, item, on_crash)


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, initializer=exit_with_parent,
                               initargs=(os.getpid(),))


def _alone(fn: Callable[[T], R], item: T, on_crash: Callable[[T], R]) -> R:
    """``fn(item)`` in a process of its own; ``on_crash(item)`` if that process dies."""
    with _pool(1) as pool:
        try:
            return pool.submit(fn, item).result()
        except BrokenProcessPool:
            return on_crash(item)


# prctl(2) option: the signal this process gets when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1
# How often a worker's watchdog looks for its parent (where prctl is not available).
_WATCH_SECONDS = 1.0


def exit_with_parent(parent: int) -> None:
    """Worker initializer: end this process when ``parent`` ends, however it ends.

    On Linux the kernel sends SIGKILL on the parent's death (``PR_SET_PDEATHSIG``); a
    watchdog thread that notices the process being re-parented covers other systems and
    the moment between the fork and this call.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # no prctl: the watchdog alone
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True,
                     name="radpath-parent-watch").start()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)  # no clean-up to run: the results have no one to go to
        time.sleep(_WATCH_SECONDS)
