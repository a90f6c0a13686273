"""GradDiff: gradient ascent on the forget answers, descent on the retain answers.

    L = -alpha_f * CE(forget) + lambda * CE(retain)

Unbounded below (the forget CE can grow without limit), which is why NPO exists; it is the
standard baseline.
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.methods.base import MethodModule, require_weights


class GradDiff(MethodModule):
    train_splits = ("forget", "retain")
    unlearning = True

    def __init__(
        self,
        *args: Any,
        alpha_forget: float = 1.0,
        retain_weight: float = 1.0,
        trainable_regex: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        require_weights(alpha_forget=alpha_forget, retain_weight=retain_weight)
        self.alpha_forget, self.retain_weight = alpha_forget, retain_weight
        self.restrict_trainable(trainable_regex)

    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        forget_ce = self.answer_loss(batch["forget"])
        retain_ce = self.answer_loss(batch["retain"])
        loss = -self.alpha_forget * forget_ce + self.retain_weight * retain_ce
        return {"loss": loss, "forget_ce": forget_ce, "retain_ce": retain_ce}
