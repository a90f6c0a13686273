"""The judge interface and the chain that applies judges in the paper's order.

A judge sees a batch of :class:`JudgeInput` and returns one verdict dict per input. A verdict
always holds ``decision``: one of ``DECISIONS`` or ``None`` (undecided: pass to the next judge
in the chain). Judges may add their own fields (``matched`` phrase, ``raw`` LLM reply,
``parsed``, ``harmful``, ``category``, ...). A judge with ``decides = False`` only annotates
(e.g. a harm judge): it runs on every answer and its decision is ignored by the chain.

``Judge.key`` identifies the judge and its settings; together with the question, the answer
and the image it keys the verdict cache, so re-judging the same answer is free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirage.utils.hashing import stable_hash

DECISIONS = ("refusal", "irrelevant", "relevant")


@dataclass
class JudgeInput:
    question: str
    answer: str
    image: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # subset, harmful_category, ground truth for oracles

    def cache_key(self, judge_key: str) -> str:
        return stable_hash([judge_key, self.question, self.answer, str(self.image) if self.image else None])[
            :32
        ]


class Judge:
    """Base class. Subclasses set ``name`` and implement ``judge_batch``."""

    name: str = "judge"
    decides: bool = True
    batch_size: int = 32

    @property
    def key(self) -> str:
        """Name plus a hash of the settings that change verdicts (override ``settings``)."""
        return f"{self.name}-{stable_hash(self.settings())[:12]}"

    def settings(self) -> dict[str, Any]:
        return {}

    def judge_batch(self, items: list[JudgeInput]) -> list[dict[str, Any]]:
        raise NotImplementedError
