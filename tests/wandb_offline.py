"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) back without syncing it, for the tests.

The file is W&B's 7-byte header (``:W&B``, magic 0xBEE1, version 0) followed by LevelDB-log records
in 32 KiB blocks: a 7-byte record header (CRC32C, little-endian length, kind) and a payload, with
kind 1 = a whole record and 2 / 3 / 4 = its first / middle / last fragment. Each payload is a
``wandb_internal_pb2.Record`` protobuf. The CRC is not checked (no CRC32C in the standard library).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7


def read_records(path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file")
    records, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        space = _BLOCK - pos % _BLOCK
        if space < _HEADER:  # a block's tail too short for a header is zero padding
            pos += space
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0:  # zero padding up to the next block
            pos += space
            continue
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            payloads = [chunk]
        elif kind == 2:
            pending, payloads = chunk, []
        elif kind == 3:
            pending, payloads = pending + chunk, []
        else:
            payloads, pending = [pending + chunk], b""
        for payload in payloads:
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
    return records


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass
class OfflineRun:
    """What an offline run holds: run fields, config, history rows, summary, artifacts."""

    run: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def history_keys(self) -> set[str]:
        return {k for row in self.history for k in row}


def _items(update: Any) -> dict[str, Any]:
    out = {}
    for item in update:
        key = item.key or "/".join(item.nested_key)
        out[key] = _json(item.value_json)
    return out


def read_offline_run(run_dir: Path) -> OfflineRun:
    (path,) = Path(run_dir).glob("run-*.wandb")
    result = OfflineRun()
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            result.run = {
                "project": run.project,
                "group": run.run_group,
                "job_type": run.job_type,
                "tags": list(run.tags),
                "name": run.display_name,
            }
            result.config.update(_items(run.config.update))
        elif kind == "config":
            result.config.update(_items(record.config.update))
        elif kind == "history":
            result.history.append(_items(record.history.item))
        elif kind == "summary":
            result.summary.update(_items(record.summary.update))
        elif kind == "artifact":
            art = record.artifact
            result.artifacts.append(
                {"name": art.name, "type": art.type, "files": [e.path for e in art.manifest.contents]}
            )
    return result
