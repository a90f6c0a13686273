"""Stable content hashes for caches (tiny models, datasets, reference log-probs)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stable_hash(obj: Any) -> str:
    """SHA-256 of a JSON rendering with sorted keys; equal content gives an equal hash across runs."""
    payload = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def file_hash(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_once(target: Path, marker: str, build: Callable[[Path], Any]) -> Path:
    """``target`` built by ``build(folder)`` unless ``target/marker`` exists already.

    Parallel jobs may race here: each builds into a private temporary folder next to ``target`` and one
    rename wins (the losers' copies are identical, so they are dropped)."""
    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        with contextlib.suppress(OSError):  # another job finished first
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
