"""IdkNPO: NPO on the harmful forget answers, SFT towards their refusals (each record's ``alternate``).

L = L_NPO(forget) + alternate_weight * CE(alternate) + retain_weight * CE(retain), L_NPO per sequence
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.data.collate import batch_view
from mirage.methods.npo import npo_loss
from mirage.methods.reference import ReferenceNeed, ReferenceStrategy
from mirage.methods.unlearning import UnlearningMethod, require, require_weights


class IdkNPO(UnlearningMethod):
    def __init__(
        self,
        *args: Any,
        reference: ReferenceStrategy,
        beta: float = 0.9,
        alternate_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        require(beta > 0, "beta", beta, "> 0")  # beta <= 0 divides by zero or pulls the forget answers up
        require_weights(alternate_weight=alternate_weight)
        self.beta, self.alternate_weight = beta, alternate_weight
        self.attach_reference(reference, [ReferenceNeed("forget", "nll")])

    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        # Both terms read the forget batch (the refusals are its alternate view): both are the forget part.
        d = -self.log_ratio(batch["forget"])  # NLL_theta - NLL_ref of each harmful answer
        forget_npo = npo_loss(d, self.beta)
        alternate_ce = self.answer_loss(batch_view(batch["forget"], "alternate"))
        terms = {"forget_npo": forget_npo, "forget_log_ratio": d.mean(), "alternate_ce": alternate_ce}
        return {**terms, "forget_loss": forget_npo + self.alternate_weight * alternate_ce}
