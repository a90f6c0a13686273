"""``relearn``: a few fine-tuning steps from the audited model (Hu et al. 2024, arXiv 2406.13356; Łucki et
al. 2024, arXiv 2409.18025: a small slice of the forgotten data, or even unrelated benign data, brings
unlearned knowledge back, for NPO, RMU and DPO alike).

For every step budget and every data source, the audit trains the audited model with mirage's own stack
(``mirage-train``: the SFT method on one split of the data the model learned from, LoRA by default, a
constant learning rate so that a budget's run is the start of a longer one) and asks the usual cases of the
export. In-distribution data is the first ``samples`` records of the forget split (harmful answers; the
evaluation asks the test split, which the forget split never holds); out-of-distribution data is a split of
benign answers unrelated to the harm (``retain`` by default). Budget 0 is the audited model itself:
the audit's unprobed evaluation, drawn at step 0 of the relearning plot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mirage.probes.base import AuditTarget, Probe, ProbeVariant


class RelearnProbe(Probe):
    name = "relearn"

    def __init__(
        self,
        steps: Sequence[int] = (0, 5, 10, 25, 50),
        data: Mapping[str, str] | None = None,
        samples: int = 32,
        finetune: str = "lora",
        lr: float = 1e-3,
        batch_size: int = 8,
        extra_overrides: Sequence[str] = (),
    ) -> None:
        budgets = sorted({int(s) for s in steps})
        if not budgets or budgets[0] < 0:
            raise ValueError(f"probe relearn: steps must be integers >= 0, got {list(steps)}")
        self.steps = [s for s in budgets if s > 0]  # budget 0 is the audited model: the audit's baseline
        self.data = dict(data or {"forget": "forget", "benign": "retain"})  # label -> split
        if not self.data:
            raise ValueError("probe relearn: data must name at least one split")
        if samples <= 0 or batch_size <= 0 or not lr > 0:
            raise ValueError("probe relearn: samples, batch_size and lr must be positive")
        if finetune not in ("lora", "full"):
            raise ValueError(f"probe relearn: finetune must be lora or full, got {finetune!r}")
        self.samples, self.finetune, self.lr, self.batch_size = (
            int(samples),
            finetune,
            float(lr),
            int(batch_size),
        )
        self.extra_overrides = [str(o) for o in extra_overrides]

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def train_overrides(self, target: AuditTarget, split: str, steps: int) -> tuple[str, ...]:
        """mirage-train overrides of one budget: the audited model, SFT on ``samples`` rows of ``split``."""
        return (
            *target.train_overrides,
            "model=checkpoint",
            f"model.name_or_path={target.model_dir}",
            f"finetune={self.finetune}",
            "method=sft",
            f"method.split={split}",
            f"method.optimizer.lr={self.lr}",
            "method.scheduler=null",  # constant: a budget's run is the start of every longer one
            f"++data.max_samples.{split}={self.samples}",  # add or override
            f"data.batch_size={self.batch_size}",
            f"trainer.max_steps={steps}",
            "trainer.max_epochs=-1",
            "trainer.limit_val_batches=0",
            "callbacks.model_checkpoint=null",
            "callbacks.model_summary=null",
            "logger=csv",
            *self.extra_overrides,
        )

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        out = []
        for label, split in self.data.items():
            for steps in self.steps:
                params = {"steps": steps, "data": label}
                out.append(
                    ProbeVariant(
                        f"relearn/{label}/{steps}", (), params, self.train_overrides(target, split, steps)
                    )
                )
        return out
