"""The attack interface: a list of samples in, the attacked samples out.

An attack never mutates its input. Each output sample keeps the original's ``id`` (the
question it attacks) and records in ``meta``:
- ``attack``: the attack's name (``Attack.name``);
- ``shot``: 0..K-1 when the attack makes K variants of one question (K-shot attacks);
- ``original_question``: the question before rewriting;
- ``prefill`` (optional): text the assistant turn starts with, which generation continues.
An attack that drops or adds images sets ``image`` (None for no image). Attacks are
deterministic given their config (and seed).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from mirage.data.records import Sample


class Attack:
    """Base class; subclasses implement ``rewrite`` for one sample (or override ``apply``)."""

    name: str = "none"

    def apply(self, samples: Iterable[Sample]) -> list[Sample]:
        out: list[Sample] = []
        for sample in samples:
            out.extend(self.rewrite(sample))
        return out

    def rewrite(self, sample: Sample) -> list[Sample]:
        raise NotImplementedError

    def variant(self, sample: Sample, question: str | None = None, shot: int | None = None, **meta) -> Sample:
        """A copy of ``sample`` with a new question and the attack's bookkeeping in ``meta``."""
        new = copy.copy(sample)
        new.meta = {
            **sample.meta,
            "attack": self.name,
            "original_question": sample.meta.get("original_question", sample.question),
            **meta,
        }
        if shot is not None:
            new.meta["shot"] = shot
        if question is not None:
            new.question = question
        return new
