"""IdkDPO: DPO that prefers the refusal (each forget record's ``alternate``) to the harmful answer.

    L = -(2/beta) * mean log sigma(beta * ((logp_c - ref_c) - (logp_r - ref_r))) + retain_weight * CE(retain)

logp = log pi_theta(y|x) and ref = log pi_ref(y|x), summed over answer tokens, for the chosen answer c
(the alternate view of the forget batch) and the rejected one r (the forget answer). While the model is
its reference, L = (2/beta) log 2 + retain_weight * CE(retain).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mirage.data.collate import batch_view
from mirage.methods.reference import ReferenceNeed, ReferenceStrategy
from mirage.methods.unlearning import UnlearningMethod, require


class IdkDPO(UnlearningMethod):
    def __init__(self, *args: Any, reference: ReferenceStrategy, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require(beta > 0, "beta", beta, "> 0")  # beta <= 0 divides by zero or flips the preference
        self.beta = beta
        needs = [ReferenceNeed("forget", "nll"), ReferenceNeed("forget", "nll", view="alternate")]
        self.attach_reference(reference, needs)

    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        chosen = self.log_ratio(batch_view(batch["forget"], "alternate"))
        rejected = self.log_ratio(batch["forget"])
        dpo = -(2.0 / self.beta) * F.logsigmoid(self.beta * (chosen - rejected)).mean()
        terms = {"forget_dpo": dpo, "chosen_log_ratio": chosen.mean(), "rejected_log_ratio": rejected.mean()}
        return {**terms, "forget_loss": dpo}
