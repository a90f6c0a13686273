"""Prefill attack: the assistant turn starts with given text ("Sure,") that generation continues.

The question is unchanged. The collator appends ``meta["prefill"]`` to the rendered prompt and
``generate_batch`` returns answers that begin with it, so refusal judges see the whole turn.
"""

from __future__ import annotations

import re

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack


class PrefillAttack(Attack):
    """Set ``meta["prefill"]``; ``name`` defaults to ``prefill_<slug of the text>``."""

    def __init__(self, prefill: str = "Sure,", name: str | None = None) -> None:
        if not prefill or not prefill.strip():
            raise ValueError("prefill: the prefill text must be non-empty")
        self.prefill = prefill
        slug = re.sub(r"[^a-z0-9]+", "_", prefill.lower()).strip("_")
        # The text is in the name so two prefills never share one results file.
        self.name = name or (f"prefill_{slug}" if slug else "prefill")

    def rewrite(self, sample: Sample) -> list[Sample]:
        return [self.variant(sample, shot=sample.meta.get("shot", 0), prefill=self.prefill)]
