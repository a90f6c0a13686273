"""The identity attack: the benchmark's questions as they are, with the attack bookkeeping set."""

from __future__ import annotations

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack


class NoAttack(Attack):
    """Copies of the samples, tagged ``attack="none"`` (shot 0 unless the sample has one)."""

    name = "none"

    def rewrite(self, sample: Sample) -> list[Sample]:
        # A K-shot file read as-is keeps its shots; a plain benchmark question is shot 0.
        return [self.variant(sample, shot=sample.meta.get("shot", 0))]
