"""A user's own method, attack and judge, kept outside mirage's package: the examples of docs/extending.md.

Each is one class here plus one YAML file in the user's config folder (tests/extending/configs/), reached with
``hydra.searchpath=[file://tests/extending/configs]``; nothing under src/ changes.
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack
from mirage.evaluation.judges.base import Judge, JudgeInput
from mirage.methods.base import MethodModule, require


class WeightedSFT(MethodModule):
    """Cross-entropy on the retain answers, scaled: the smallest method there is."""

    def __init__(self, *args: Any, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require(scale > 0, "scale", scale, "> 0")
        self.scale = scale

    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        ce = self.answer_loss(batch["retain"])
        return {"loss": self.scale * ce, "retain_ce": ce}


class ShoutAttack(Attack):
    """Asks every question in capitals, one shot."""

    name = "shout"

    def rewrite(self, sample: Sample) -> list[Sample]:
        return [self.variant(sample, question=sample.question.upper(), shot=0)]


class ShortAnswerJudge(Judge):
    """An answer of fewer than ``min_words`` words is irrelevant; it reads the answer only."""

    name = "short_answer"
    reads = ("answer",)

    def __init__(self, min_words: int = 3) -> None:
        self.min_words = int(min_words)

    def settings(self) -> dict[str, Any]:
        return {"min_words": self.min_words}

    def judge_batch(self, items: list[JudgeInput]) -> list[dict[str, Any]]:
        return [
            {"decision": "irrelevant" if len(item.answer.split()) < self.min_words else None}
            for item in items
        ]
