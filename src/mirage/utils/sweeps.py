"""Sweeps that tell the truth: after a multirun, every failed job is named with its overrides and its error,
and the command exits non-zero. Imports nothing of mirage."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)
_failed: list[str] = []  # this process's last multirun: one line per failed job


def failed_jobs(sweep_dir: Path) -> list[str]:
    """``<job>: <overrides>: <error>`` for every job of a sweep folder that wrote ``error.txt``
    (mirage's task wrapper writes it when a job fails, and lets the other jobs run)."""
    lines = []
    for error in sorted(sweep_dir.glob("*/error.txt"), key=lambda p: (len(p.parent.name), p.parent.name)):
        text = [line for line in error.read_text().splitlines() if line.strip()]
        overrides = error.parent / ".hydra" / "overrides.yaml"
        given = " ".join(line.removeprefix("- ").strip() for line in overrides.read_text().splitlines())
        lines.append(
            f"job {error.parent.name} ({given if overrides.is_file() else '?'}): {text[-1] if text else '?'}"
        )
    return lines


class FailedJobsCallback(Callback):
    """Lists a multirun's failed jobs when it ends; ``hydra_cli`` then exits with status 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        _failed[:] = failed_jobs(Path(config.hydra.sweep.dir))
        if _failed:
            log.error("%d job(s) of the sweep failed:\n  %s", len(_failed), "\n  ".join(_failed))


def hydra_cli(main: Callable[[], Any]) -> Callable[[], None]:
    """The console script of a Hydra entry point: ``main``, then exit status 1 if its multirun had a failed
    job (Hydra itself exits 0 once every job has run)."""

    @functools.wraps(main)
    def cli() -> None:
        _failed.clear()
        main()
        if _failed:
            sys.exit(1)

    return cli
