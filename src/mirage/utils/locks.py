"""Claiming a cache folder while it is built, so that two runs sharing a cache never build it twice.
Imports nothing of mirage."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


@contextmanager
def claimed(folder: str | Path, what: str) -> Iterator[None]:
    """Hold ``<folder>.lock`` (an OS file lock, released if the holder dies) while ``folder`` is checked
    and built: a second process waits here, then finds it built and reuses it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{folder}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("%s: another run is building %s; waiting for it", what, folder)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()
