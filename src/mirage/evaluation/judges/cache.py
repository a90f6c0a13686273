"""A verdict cache on disk, and the loop that judges only what the cache does not hold.

The cache is an append-only JSON Lines file of ``{"key": ..., "verdict": {...}}``; the key is
``Judge.cache_key(item)``, so it changes with the judge's settings and every input field the judge
reads (``Judge.reads``). Each finished batch is appended and flushed, so a killed evaluation keeps
everything judged before it died; its half-written last line is dropped with a warning on reopen.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mirage.evaluation.judges.base import Judge, JudgeInput
from mirage.utils.jsonl import load_jsonl

log = logging.getLogger(__name__)


class VerdictCache:
    """Verdicts by key, loaded from ``path`` on open; later lines win over earlier ones."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._verdicts: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        # A lost verdict is only judged again, so bad lines are skipped (with a warning), not fatal;
        # the file's tail is readied for appending (torn line cut off, missing newline added).
        for record in load_jsonl(self.path, required=("key", "verdict"), skip_malformed=True, repair=True):
            self._verdicts[record["key"]] = record["verdict"]

    def __len__(self) -> int:
        return len(self._verdicts)

    def __contains__(self, key: str) -> bool:
        return key in self._verdicts

    def get(self, key: str) -> dict[str, Any] | None:
        return self._verdicts.get(key)

    def put_many(self, pairs: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Append the (key, verdict) pairs and flush them to disk."""
        pairs = list(pairs)
        if not pairs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write call for the whole batch keeps concurrent appenders from interleaving within a line.
        text = "".join(json.dumps({"key": k, "verdict": v}, ensure_ascii=False) + "\n" for k, v in pairs)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for key, verdict in pairs:
            self._verdicts[key] = verdict


def run_judge(
    judge: Judge,
    items: Sequence[JudgeInput],
    cache: VerdictCache | None,
    progress_description: str | None = None,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Verdicts for all items in input order; only items missing from the cache reach the judge.

    Missing items are judged in batches of ``judge.batch_size`` (identical items once) and each
    batch is stored as soon as it finishes. ``cache=None`` judges everything and stores nothing.
    ``quiet`` drops the progress bar and the log line (for frequent small calls, e.g. safety curves).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    keys = [judge.cache_key(item) for item in items]
    found: dict[str, dict[str, Any]] = {}
    if cache is not None:
        found = {key: verdict for key in set(keys) if (verdict := cache.get(key)) is not None}
    todo: dict[str, JudgeInput] = {}
    for key, item in zip(keys, items, strict=True):
        if key not in found and key not in todo:
            todo[key] = item
    if todo:
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "judge %s: %d of %d answers to judge (%d cached)",
            judge.name,
            len(todo),
            len(items),
            len(found),
        )
        pending = list(todo.items())
        size = max(1, int(judge.batch_size))
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, transient=False, disable=quiet) as progress:
            task = progress.add_task(progress_description or f"judging ({judge.name})", total=len(pending))
            for start in range(0, len(pending), size):
                chunk = pending[start : start + size]
                verdicts = judge.judge_batch([item for _, item in chunk])
                if len(verdicts) != len(chunk):
                    raise RuntimeError(
                        f"judge {judge.name} returned {len(verdicts)} verdicts for {len(chunk)} answers"
                    )
                pairs = [(key, verdict) for (key, _), verdict in zip(chunk, verdicts, strict=True)]
                if cache is not None:
                    cache.put_many(pairs)
                found.update(pairs)
                progress.advance(task, len(chunk))
    # Copies: callers may annotate verdicts without touching the cache or each other's duplicates.
    return [dict(found[key]) for key in keys]
