"""Worker processes for the pipeline's independent tasks (``jobs``).

On a few CPU cores a tiny model cannot use them all: a training step at 2 threads is only ~1.4x one at 1
thread, and greedy generation is no faster at 2 threads than at 1. ``jobs`` worker processes, each pinned to
``threads // jobs`` torch threads, run stages of different branches, evaluations and audited models side by
side. A task's thread count is fixed by the plan, never by timing, so a rerun gives the same numbers.

``jobs=1`` runs every task in this process, one after another, with torch's own thread count: exactly what
the pipeline did before it had workers.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

log = logging.getLogger(__name__)
_pinned: int | None = None  # the torch threads this worker's current task was given (None: not pinned)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def thread_budget() -> int:
    """The torch threads this process would use (``OMP_NUM_THREADS``, else torch's default): the workers share
    them."""
    import torch

    return torch.get_num_threads()


def pinned_threads() -> int | None:
    """The thread count a worker task runs with, so that caches of what it trains can be keyed by it."""
    return _pinned


def _init_worker(log_files: list[str], searchpath: list[str], level: int, quiet: bool) -> None:
    from mirage.utils.quiet import quiet_third_party
    from mirage.workflows.configs import register_resolvers, set_searchpath

    root = logging.getLogger()
    root.handlers.clear()
    formatter = logging.Formatter(LOG_FORMAT)
    for handler in [logging.StreamHandler(sys.stderr), *(logging.FileHandler(f) for f in log_files)]:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    # Progress bars and tables of two processes would tangle on one console: workers speak through the log.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the worker's whole life)
    set_searchpath(searchpath)  # the user's config folders (hydra.searchpath), as in the parent's Hydra app
    register_resolvers()
    quiet_third_party(quiet)  # as the parent's extras.ignore_warnings


def _run(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    import torch

    global _pinned
    torch.set_num_threads(threads)
    _pinned = threads
    try:
        return fn(*args)
    finally:
        _pinned = None


class Workers:
    """``submit(fn, *args, threads=n)`` -> a Future; ``jobs=1`` runs ``fn`` at once, in this process."""

    def __init__(self, jobs: int, quiet: bool = True) -> None:
        if int(jobs) < 1:
            raise ValueError(f"jobs={jobs}: give at least 1 (worker processes running tasks at once)")
        self.jobs = int(jobs)
        self.quiet = quiet
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        if self.jobs > 1:
            files = [
                h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)
            ]
            self._pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=get_context("spawn"),  # no forked torch thread pools or Hydra state
                initializer=_init_worker,
                initargs=(files, _parent_searchpath(), logging.getLogger().getEffectiveLevel(), self.quiet),
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def threads(self, alone: bool = False) -> int | None:
        """Torch threads of a task: the whole budget for one that nothing runs beside (``alone``), an equal
        share otherwise; ``None`` (unpinned: this process's own) with ``jobs=1``."""
        if self.jobs == 1:
            return None
        return thread_budget() if alone else max(1, thread_budget() // self.jobs)

    def submit(self, fn: Callable[..., Any], *args: Any, threads: int | None = None) -> Future:
        if self._pool is None:
            future: Future = Future()
            future.set_result(fn(*args))  # an exception propagates here, as in a plain call
            return future
        return self._pool.submit(_run, threads or 1, fn, args)


def _parent_searchpath() -> list[str]:
    """``hydra.searchpath`` of the running Hydra app (a user's own config folders), else none."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(p) for p in HydraConfig.get().searchpath] if HydraConfig.initialized() else []
    except Exception:  # outside Hydra
        return []
