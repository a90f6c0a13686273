"""Attacks applied in sequence (e.g. a one-word rewrite, then a prefill)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack


class ComposedAttack(Attack):
    """``attacks[0]`` first, each later attack on the previous one's output; name joins names with "+"."""

    def __init__(self, attacks: Sequence[Attack], name: str | None = None) -> None:
        attacks = list(attacks)
        if not attacks:
            raise ValueError("compose: give at least one attack")
        for attack in attacks:
            if not isinstance(attack, Attack):
                raise TypeError(f"compose: expected Attack instances, got {type(attack).__name__}")
        self.attacks = attacks
        self.name = name or "+".join(attack.name for attack in attacks)

    def apply(self, samples: Iterable[Sample]) -> list[Sample]:
        out = list(samples)
        for attack in self.attacks:
            out = attack.apply(out)
        result = []
        for sample in out:
            # Each stage tags its own name; the final record names the whole chain and its parts.
            new = copy.copy(sample)
            new.meta = {**sample.meta, "attack": self.name, "attacks": [a.name for a in self.attacks]}
            result.append(new)
        return result

    def rewrite(self, sample: Sample) -> list[Sample]:
        return self.apply([sample])
