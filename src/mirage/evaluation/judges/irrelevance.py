"""The hedging-word rule: an answer that hedges or deflects is irrelevant, before any LLM judge runs."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from mirage.evaluation.judges.base import Judge, JudgeInput

# Words that mark an answer turning away from the request ("..., but I can only describe the image").
# Deliberately short, after the paper's "short list of hedging words". "meanwhile" is left out on
# purpose: it narrates rather than hedges, and the reference's substring test wrongly caught it via "while".
DEFAULT_HEDGES: tuple[str, ...] = ("however", "but", "unfortunately", "while", "instead", "although")


class IrrelevanceRulesJudge(Judge):
    """An answer is irrelevant if it is empty or contains a hedging word or phrase.

    Each word or phrase matches as a whole word, case-insensitively: it is escaped and wrapped in
    ``(?<!\\w)...(?!\\w)`` (the same as ``\\b...\\b`` for ordinary words) with ``re.IGNORECASE``, so
    "while" matches "While I can see..." but not "Meanwhile", and "but" does not match "button".
    Default list: ``DEFAULT_HEDGES`` (however, but, unfortunately, while, instead, although).
    An empty or whitespace-only answer is irrelevant (``matched`` is ``""``).
    Verdict: ``{"decision": "irrelevant" | None, "matched": word | "" | None}``; the first word
    in list order that is found is reported.
    """

    name = "irrelevance_rules"
    reads = ("answer",)
    batch_size = 1024

    def __init__(self, words: Sequence[str] | None = None, batch_size: int | None = None) -> None:
        chosen = DEFAULT_HEDGES if words is None else words
        self.words = list(dict.fromkeys(w.strip() for w in chosen if w.strip()))
        if batch_size is not None:
            self.batch_size = batch_size
        # Lookarounds rather than \b: identical for words that start and end in a letter, and still right
        # for a phrase that ends in punctuation ("not!"), where \b would demand a following letter.
        self._patterns = [
            (word, re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.IGNORECASE)) for word in self.words
        ]

    def settings(self) -> dict[str, Any]:
        return {"words": self.words, "rules": "whole-word-v1"}

    def match(self, answer: str) -> str | None:
        if not answer.strip():
            return ""
        for word, pattern in self._patterns:
            if pattern.search(answer):
                return word
        return None

    def judge_batch(self, items: list[JudgeInput]) -> list[dict[str, Any]]:
        verdicts = []
        for item in items:
            matched = self.match(item.answer)
            verdicts.append({"decision": "irrelevant" if matched is not None else None, "matched": matched})
        return verdicts
