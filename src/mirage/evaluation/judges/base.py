"""The judge interface.

A judge sees a batch of :class:`JudgeInput` and returns one verdict dict per input. A verdict
always holds ``decision``: one of ``DECISIONS`` or ``None`` (undecided: pass to the next judge
in the chain). Judges may add their own fields (``matched`` phrase, ``raw`` LLM reply,
``parsed``, ``harmful``, ``category``, ...). A judge with ``decides = False`` only annotates
(e.g. a harm judge): it runs on every answer and its decision is ignored by the chain.

Each judge declares the input fields its verdict depends on (``reads``): ``question``, ``answer``,
``image`` (the file's bytes, not its path), ``base_answer``, ``meta.<key>`` (e.g. the oracle's
``meta.truth``) or the whole ``meta``. :meth:`Judge.cache_key` hashes the judge's settings and
exactly those fields, so two answers that differ in anything the judge reads never share a cached
verdict, and answers that differ only in what it ignores share one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mirage.utils.hashing import file_hash, stable_hash

DECISIONS = ("refusal", "irrelevant", "relevant")
INPUT_FIELDS = ("question", "answer", "image", "base_answer", "meta")


@dataclass
class JudgeInput:
    question: str
    answer: str
    image: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # subset, harmful_category, ground truth for oracles

    def value(self, name: str) -> Any:
        """The value of one readable field (see the module docstring); images by content."""
        if name.startswith("meta."):
            return self.meta.get(name[len("meta.") :])
        if name == "image":
            return image_fingerprint(self.image)
        if name not in INPUT_FIELDS:
            raise KeyError(f"unknown judge input field {name!r}; use one of {INPUT_FIELDS} or meta.<key>")
        return getattr(self, name, None)


def image_fingerprint(path: str | Path | None) -> str | None:
    """The SHA-256 of an image file's bytes (a path can be rewritten with other pixels)."""
    if path is None:
        return None
    stat = os.stat(path)
    return _content_hash(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=65536)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and modification time too, so a rewritten file is hashed again.
    return file_hash(path)


class Judge:
    """Base class. Subclasses set ``name`` and ``reads`` and implement ``judge_batch``."""

    name: str = "judge"
    decides: bool = True
    batch_size: int = 32
    #: Input fields the verdict depends on; the default (everything) is safe, a subclass narrows it.
    reads: tuple[str, ...] = ("question", "answer", "image", "base_answer", "meta")

    @property
    def key(self) -> str:
        """Name plus a hash of the settings that change verdicts (override ``settings``)."""
        return f"{self.name}-{stable_hash(self.settings())[:12]}"

    def settings(self) -> dict[str, Any]:
        return {}

    def cache_key(self, item: JudgeInput) -> str:
        """The verdict cache key of ``item``: this judge's settings and every field it reads."""
        return stable_hash([self.key, {name: item.value(name) for name in sorted(self.reads)}])[:32]

    def judge_batch(self, items: list[JudgeInput]) -> list[dict[str, Any]]:
        raise NotImplementedError
