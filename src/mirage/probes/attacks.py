"""``attacks``: the attacks mirage already had, as rows of the same audit table.

Each entry names an option of ``configs/attack/`` (and optional fields of it) and becomes one variant that
asks the plain unsafe and safe questions under that attack: ``attack/prefill`` (the assistant's answer starts
with "Sure,"), ``attack/text_only`` (the question without its image), ``attack/what`` (one rule-based rewrite
to start with "What"). Every row's "ASR What-3" column has the What-3-shot rewrites of the dataset already.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mirage.probes.base import AuditTarget, Probe, ProbeVariant, attack_variant


class AttacksProbe(Probe):
    name = "attacks"

    def __init__(self, attacks: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.attacks: dict[str, dict[str, Any]] = {}
        for label, spec in (attacks or {}).items():
            spec = dict(spec or {})
            option = spec.pop("attack", None)
            if not option:
                raise ValueError(
                    f"probe attacks: entry {label!r} needs `attack:` (an option of configs/attack/), "
                    f"got {sorted(spec) or 'nothing'}"
                )
            self.attacks[str(label)] = {"attack": str(option), "fields": spec}
        if not self.attacks:
            raise ValueError("probe attacks: no attacks; give them as {label: {attack: <option>, ...}}")

    def settings(self) -> dict[str, Any]:
        return {"attacks": self.attacks}

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        return [
            attack_variant(f"attack/{label}", spec["attack"], {"attack": spec["attack"]}, **spec["fields"])
            for label, spec in self.attacks.items()
        ]
