"""Append-only JSON Lines files that survive a killed writer: one reader and one tail repair for all.

A process killed mid-write leaves a fragment after the file's last newline: part of a record,
perhaps cut inside a multi-byte character. Readers drop that fragment with a warning and writers
cut it off before appending. A last record that is complete but lacks its newline is kept, and
writers add the newline before appending, so the records a reader counts are the records in the
file. A bad line before the last is damage, not a torn write: an error (or, for a cache that can
recompute what it loses, a warning). Works on bytes, so a cut character never hides the lines
before it. Imports nothing of mirage.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlError(ValueError):
    """A bad line (not UTF-8, not a JSON object, a required key missing) that is not a torn last line."""


class _BadLine(ValueError):
    def __init__(self, kind: str, detail: str, byte_in_line: int = 0) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.byte_in_line = kind, detail, byte_in_line


def _parse_line(raw: bytes, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """One line's record; :class:`_BadLine` says what is wrong (UTF-8, JSON, not an object, a key)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _BadLine("not UTF-8", err.reason, err.start) from err
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise _BadLine("malformed JSON", err.msg) from err
    if not isinstance(record, dict):
        raise _BadLine("not a JSON object", f"got {type(record).__name__}")
    missing = [key for key in required if key not in record]
    if missing:
        raise _BadLine("missing field", f"no {missing[0]!r} in the record")
    return record


def _tail(data: bytes) -> tuple[int, bytes, bool]:
    """Where the newline-terminated lines end, the bytes after them, and whether those are a whole record.

    A cut JSON object never parses as one, so "parses" means the writer finished the record.
    """
    body_end = data.rfind(b"\n") + 1
    tail = data[body_end:]
    try:
        _parse_line(tail)
    except _BadLine:
        return body_end, tail, False
    return body_end, tail, True


def _ready_for_append(path: Path, body_end: int, tail: bytes, complete: bool) -> None:
    if not tail.strip():
        return
    if complete:
        with open(path, "ab") as handle:
            handle.write(b"\n")
    else:
        os.truncate(path, body_end)


def load_jsonl(
    path: str | Path,
    *,
    required: tuple[str, ...] = (),
    skip_malformed: bool = False,
    repair: bool = False,
) -> list[dict[str, Any]]:
    """The records of ``path`` (none if it does not exist), in file order.

    A torn last line (no newline after it, not a whole JSON object) is dropped with a warning.
    Any other line that is not a JSON object holding the ``required`` keys raises
    :class:`JsonlError` naming the file, line and byte offset, or with ``skip_malformed`` is
    skipped with a warning. ``repair`` also readies the file for appending: a torn last line is
    cut off, a complete one gets its missing newline.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    body_end, tail, complete = _tail(data)
    lines = data[:body_end].split(b"\n")[:-1]
    if complete:
        lines.append(tail)
    elif tail.strip():
        log.warning(
            "%s: dropping a truncated last line %d (%d bytes): the writer was killed mid-write",
            path,
            len(lines) + 1,
            len(tail),
        )
    records: list[dict[str, Any]] = []
    line_start = 0
    for line_no, raw in enumerate(lines, start=1):
        if raw.strip():
            try:
                records.append(_parse_line(raw, required))
            except _BadLine as err:
                offset = line_start + err.byte_in_line
                message = f"{path}: {err.kind} on line {line_no} (byte offset {offset}): {err.detail}"
                if not skip_malformed:
                    raise JsonlError(message) from err
                log.warning("ignoring a bad line: %s", message)
        line_start += len(raw) + 1
    if repair:
        _ready_for_append(path, body_end, tail, complete)
    return records


def repair_jsonl_tail(path: str | Path) -> None:
    """Make ``path`` ready for appending: cut off a torn last line, end a complete one with a newline."""
    path = Path(path)
    if not path.is_file():
        return
    body_end, tail, complete = _tail(path.read_bytes())
    if tail.strip() and not complete:
        log.warning("%s: cutting off a truncated last line (%d bytes)", path, len(tail))
    _ready_for_append(path, body_end, tail, complete)
