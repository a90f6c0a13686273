"""Append-only JSON Lines files that make long evaluations resumable.

Answers are appended (and flushed) batch by batch, so a killed run loses at most the batch
in flight; on restart, records whose key is already on disk are neither regenerated nor
re-judged. A torn last line (the process died mid-write) is dropped with a warning; the rules
are in :mod:`mirage.utils.jsonl`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mirage.data.records import Sample
from mirage.utils.jsonl import load_jsonl, repair_jsonl_tail


def record_key(sample: Sample) -> str:
    """What identifies one answer of a case: question id, subset, attack and shot."""
    meta = sample.meta
    return f"{sample.id}|{meta.get('subset', '')}|{meta.get('attack', 'none')}|{meta.get('shot', 0)}"


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSON Lines file (none if it is missing).

    A torn last line (cut mid-record or mid-character) is dropped with a warning; a complete last
    line without its newline is kept; a bad line before the last is an error naming file and line.
    """
    return load_jsonl(path)


class JsonlAppender:
    """Appends records to a JSON Lines file, flushing each batch to disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()

    def _repair_tail(self) -> None:
        # Appended records must start on a line of their own: cut a torn last line off, or end a
        # complete one with the newline it lacks (cutting it would lose a record resume counted).
        repair_jsonl_tail(self.path)

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
