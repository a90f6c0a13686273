"""The cache of computed attacks (an image, a text suffix): a folder per key, written atomically, reused
when complete.

A key covers the model by the content of its files (:func:`model_fingerprint`): weights, configs, tokenizer
and processor, and a LoRA adapter's base model too, so a model retrained or re-exported into the same folder
gets a new result. A folder counts as complete when its ``result.json`` exists; it is built in a private
temporary folder next to it and renamed into place, so a killed job leaves nothing half-written and parallel
jobs that race keep one copy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from mirage.utils.hashing import build_once, file_hash

RESULT = "result.json"
IMAGE = "adversarial.png"


@lru_cache(maxsize=1024)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:  # a file is hashed once per process
    return file_hash(path)


def model_fingerprint(path: Path) -> dict[str, Any]:
    """``{relative file name: sha256}`` of a file or of every file under a folder; for a LoRA adapter, its
    base model's too (a local folder by content, a hub name by name)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (a model directory or an image the attack depends on)")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    prints: dict[str, Any] = {}
    for file in files:
        stat = file.stat()
        prints[file.name if file == path else str(file.relative_to(path))] = _content_hash(
            str(file.resolve()), stat.st_size, stat.st_mtime_ns
        )
    adapter = path / "adapter_config.json"
    if path.is_dir() and adapter.is_file():
        base = json.loads(adapter.read_text(encoding="utf-8")).get("base_model_name_or_path")
        prints["base_model"] = model_fingerprint(Path(base)) if base and Path(base).is_dir() else base
    return prints


def read_result(folder: Path, artifact: str = IMAGE, field: str = "image") -> dict[str, Any] | None:
    """A complete folder's ``result.json``, with ``field`` the path of its ``artifact`` (by default ``image``:
    the adversarial PNG); ``None`` when not built."""
    result_file = folder / RESULT
    if not result_file.is_file():
        return None
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ValueError(f"{result_file}: not JSON ({err}); delete {folder} to compute it again") from err
    if not (folder / artifact).is_file():
        raise FileNotFoundError(
            f"{folder / artifact}: missing beside {result_file}; delete {folder} to recompute"
        )
    return {**result, field: str(folder / artifact)}


def write_result(
    folder: Path, build: Callable[[Path], dict[str, Any]], artifact: str = IMAGE, field: str = "image"
) -> dict[str, Any]:
    """``build(tmp)`` writes ``artifact`` (and anything else) into a temporary folder and returns what goes in
    ``result.json``; the folder is then renamed to ``folder``. Returns :func:`read_result` of it."""

    def build_folder(tmp: Path) -> None:
        result = build(tmp)
        if not (tmp / artifact).is_file():
            raise RuntimeError(f"the attack's build wrote no {artifact}")
        text = json.dumps(result, indent=1, allow_nan=False, default=str)
        (tmp / RESULT).write_text(text + "\n", encoding="utf-8")
        with open(tmp / RESULT, "rb") as handle:
            os.fsync(handle.fileno())

    build_once(folder, RESULT, build_folder)
    result = read_result(folder, artifact, field)
    assert result is not None  # build_once left a complete folder (ours or a racing job's)
    return result
