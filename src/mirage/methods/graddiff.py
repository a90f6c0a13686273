"""GradDiff: gradient ascent on the forget answers, descent on the retain answers.

    L = -alpha_f * CE(forget) + lambda * CE(retain)

Unbounded below (the forget CE can grow without limit), which is why NPO exists; it is the
standard baseline.
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.methods.unlearning import UnlearningMethod, require_weights


class GradDiff(UnlearningMethod):
    def __init__(self, *args: Any, alpha_forget: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require_weights(alpha_forget=alpha_forget)
        self.alpha_forget = alpha_forget

    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        forget_ce = self.answer_loss(batch["forget"])
        return {"forget_ce": forget_ce, "forget_loss": -self.alpha_forget * forget_ce}
