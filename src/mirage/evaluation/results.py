"""Append-only JSON Lines files that make long evaluations resumable.

Answers are appended (and flushed) batch by batch, so a killed run loses at most the batch
in flight; on restart, records whose key is already on disk are neither regenerated nor
re-judged. A torn last line (the process died mid-write) is dropped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mirage.data.records import Sample

log = logging.getLogger(__name__)


def record_key(sample: Sample) -> str:
    """What identifies one answer of a case: question id, subset, attack and shot."""
    meta = sample.meta
    return f"{sample.id}|{meta.get('subset', '')}|{meta.get('attack', 'none')}|{meta.get('shot', 0)}"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file; a torn final line is dropped, a malformed earlier one is an error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                log.warning("%s: dropping a torn last line (the previous run was killed mid-write)", path)
                break
            raise ValueError(f"{path}: malformed JSON on line {number}: {err.msg}") from err
    return records


class JsonlAppender:
    """Appends records to a JSON Lines file, flushing each batch to disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        # Cut a torn last line so that appended records start on a line of their own.
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        data = self.path.read_bytes()
        if not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            self.path.write_bytes(data[:keep])

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (write a temporary file, then rename), so readers never see half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    os.replace(tmp, path)
