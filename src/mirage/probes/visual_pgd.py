"""``visual_pgd``: a universal visual adversarial image per model (Qi et al. 2023, arXiv 2306.13213).

For every L-infinity budget (default 16/255, 32/255 and unconstrained), one image is optimised by PGD on the
audited model's own gradients to make a small corpus of harmful target answers likely given a neutral prompt,
then shown with every question of the plain cases in place of its image
(:class:`mirage.evaluation.attacks.visual_pgd.VisualPGDAttack`). The image is computed when the variant is
first evaluated and kept under ``<target.work_dir>/visual_pgd/``, keyed by the model's files, the settings
and the corpus, so a resumed audit reuses it. The corpus is ``targets_file``, or by default the forget split
of the data the audited model learned from (``<data.root>/forget.json``, from the target's train overrides).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirage.probes.base import AuditTarget, Probe, ProbeVariant, attack_variant, forget_split

LEVELS = 255  # an L-infinity budget of 255/255 leaves every pixel free: unconstrained


class VisualPGDProbe(Probe):
    name = "visual_pgd"

    def __init__(
        self,
        epsilons: Sequence[int] = (16, 32, LEVELS),
        steps: int = 500,
        step_size: int = 1,
        num_targets: int | None = 16,
        targets_file: str | None = None,
        prompt: str = "",
        init_image: str | None = None,
        image_size: int | None = None,
        batch_size: int = 8,
        dtype: str = "float32",
        device: str = "auto",
    ) -> None:
        self.epsilons = sorted({int(e) for e in epsilons})
        if not self.epsilons or not all(1 <= e <= LEVELS for e in self.epsilons):
            raise ValueError(
                f"probe visual_pgd: epsilons are 8-bit levels in 1..{LEVELS} ({LEVELS}: unconstrained), "
                f"got {list(epsilons)}"
            )
        self.options = {
            "steps": int(steps),
            "step_size": int(step_size),
            "num_targets": None if num_targets is None else int(num_targets),
            "prompt": str(prompt),
            "init_image": init_image,
            "image_size": image_size,
            "batch_size": int(batch_size),
            "dtype": str(dtype),
            "device": str(device),
        }
        self.targets_file = None if targets_file is None else str(targets_file)

    def settings(self) -> dict[str, Any]:
        return {"epsilons": self.epsilons, "targets_file": self.targets_file, **self.options}

    def targets(self, target: AuditTarget) -> Path:
        """The target corpus: ``targets_file``, else ``<data.root>/forget.json`` of the target's data."""
        return forget_split(target, self.targets_file, "visual_pgd", "targets_file")

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        fields = {
            "model_dir": str(target.model_dir),
            "targets_file": str(self.targets(target)),
            "cache_dir": str(target.work_dir / "visual_pgd"),
            "seed": target.seed,
            **{k: "null" if v is None else v for k, v in self.options.items()},  # a Hydra null
        }
        out = []
        for epsilon in self.epsilons:
            label = "visual_pgd/" + ("unconstrained" if epsilon == LEVELS else str(epsilon))
            params = {"epsilon": epsilon / LEVELS, "epsilon_levels": epsilon}
            out.append(attack_variant(label, "visual_pgd", params, epsilon=epsilon, **fields))
        return out
