"""``gcg``: a universal adversarial text suffix per model (GCG, Zou et al. 2023, arXiv 2307.15043).

One suffix is found by greedy coordinate gradient search on the audited model's own gradients to make the
harmful answers of a small corpus of questions (each asked with its image) likely, then appended to every
question of the plain cases (:class:`mirage.evaluation.attacks.gcg.GCGAttack`). The suffix is computed when
the variant is first evaluated and kept under ``<target.work_dir>/gcg/``, keyed by the model's files, the
settings and the corpus, so a resumed audit reuses it. The corpus is ``corpus_file``, or by default the
forget split of the data the audited model learned from (``<data.root>/forget.json``, from the target's
train overrides).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirage.probes.base import AuditTarget, Probe, ProbeVariant, attack_variant, forget_split


class GCGProbe(Probe):
    name = "gcg"

    def __init__(
        self,
        steps: int = 100,
        suffix_length: int = 20,
        num_prompts: int | None = 8,
        corpus_file: str | None = None,
        target: str | None = None,
        init: str | None = None,
        topk: int = 256,
        search_width: int = 128,
        batch_size: int = 64,
        allow_non_ascii: bool = False,
        dtype: str = "float32",
        device: str = "auto",
    ) -> None:
        if int(steps) < 1 or int(suffix_length) < 1:
            raise ValueError(
                f"probe gcg: steps and suffix_length must be positive, got {steps}, {suffix_length}"
            )
        self.options = {
            "steps": int(steps),
            "suffix_length": int(suffix_length),
            "num_prompts": None if num_prompts is None else int(num_prompts),
            "target": target,
            "init": init,
            "topk": int(topk),
            "search_width": int(search_width),
            "batch_size": int(batch_size),
            "allow_non_ascii": bool(allow_non_ascii),
            "dtype": str(dtype),
            "device": str(device),
        }
        self.corpus_file = None if corpus_file is None else str(corpus_file)

    def settings(self) -> dict[str, Any]:
        return {"corpus_file": self.corpus_file, **self.options}

    def corpus(self, target: AuditTarget) -> Path:
        """The questions, images and answers: ``corpus_file``, else ``<data.root>/forget.json`` of the
        target's data."""
        return forget_split(target, self.corpus_file, "gcg", "corpus_file")

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        fields = {
            "model_dir": str(target.model_dir),
            "corpus_file": str(self.corpus(target)),
            "cache_dir": str(target.work_dir / "gcg"),
            "seed": target.seed,
            **{k: "null" if v is None else v for k, v in self.options.items()},  # a Hydra null
        }
        params = {"steps": self.options["steps"], "suffix_length": self.options["suffix_length"]}
        return [attack_variant("gcg", "gcg", params, **fields)]
