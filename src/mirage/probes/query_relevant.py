"""``query_relevant``: MM-SafetyBench's query-relevant images (Liu et al. 2024, arXiv 2311.17600; the attack
is :class:`mirage.evaluation.attacks.query_relevant.QueryRelevantAttack`): the request's key phrase
typeset, and the question rephrased to point at "the activity/product shown at the bottom of the image".

Variants: ``query_relevant/typo`` (the phrase alone in a white image: the paper's TYPO) and
``query_relevant/image_typo`` (the question's own image above the phrase: the paper's SD+TYPO with the
benchmark's image in place of a Stable Diffusion picture; the SD variants need a diffusion model and are
left out). Image size and cache as in :mod:`mirage.probes.figstep`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mirage.evaluation.attacks.query_relevant import MODES
from mirage.probes.base import AuditTarget, Probe, ProbeVariant, attack_variant
from mirage.probes.figstep import model_input_side, typography_dir


class QueryRelevantProbe(Probe):
    name = "query_relevant"

    def __init__(self, size: int | None = None, modes: Sequence[str] = MODES) -> None:
        modes = list(dict.fromkeys(str(m) for m in modes))
        unknown = sorted(set(modes) - set(MODES))
        if unknown or not modes:
            raise ValueError(f"probe query_relevant: modes must be among {list(MODES)}, got {modes}")
        if size is not None and int(size) < 8:
            raise ValueError(f"probe query_relevant: size must be null or at least 8 pixels, got {size}")
        self.size = None if size is None else int(size)
        self.modes = modes

    def settings(self) -> dict[str, Any]:
        return {"size": self.size, "modes": self.modes}

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        side = self.size or model_input_side(target.model_dir)
        return [
            attack_variant(
                f"query_relevant/{mode}",
                "query_relevant",
                params={"size": side, "mode": mode},
                size=side,
                mode=mode,
                cache_dir=typography_dir(target),
            )
            for mode in self.modes
        ]
