"""NPO: Negative Preference Optimization (Zhang et al., 2024), as used by Safety Mirage.

    L = alpha_f * L_NPO(forget) + alpha_r * L_retainNPO(retain) + lambda * CE(retain)
    L_NPO = -(2 / beta) * mean log sigmoid(beta * d),   d = NLL_theta - NLL_ref

``reduction: sequence`` takes d per sequence from summed answer-token NLLs (the paper's
formula); ``token_mean`` takes one d per batch from mean token NLLs (the reference code,
which the paper's numbers come from). When the model equals the reference, d = 0 and
L_NPO = (2 / beta) log 2. The optional retain term is
``alpha_r * (2 / beta) * mean log sigmoid(beta * d_retain)``, which rewards a retain NLL
below the reference's. ``forget_tokens`` picks the answer (code) or the query (paper text).
The forget part (``forget_loss``) is alpha_f * L_NPO(forget); the rest is the retain part.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mirage.methods.losses import sequence_nll
from mirage.methods.reference import ReferenceNeed, ReferenceStrategy
from mirage.methods.unlearning import UnlearningMethod, require, require_weights

REDUCTIONS = ("sequence", "token_mean")
TOKEN_CHOICES = {"answer": "labels", "query": "prompt_labels"}


def npo_log_ratio(
    nll: torch.Tensor, count: torch.Tensor, ref_nll: torch.Tensor, ref_count: torch.Tensor, reduction: str
) -> torch.Tensor:
    """d = NLL_theta - NLL_ref: per sequence (summed NLL) or one value (batch-mean token NLL)."""
    if reduction == "sequence":
        return nll - ref_nll
    if reduction == "token_mean":
        return (nll.sum() / count.sum() - ref_nll.sum() / ref_count.sum()).unsqueeze(0)
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def npo_loss(d: torch.Tensor, beta: float) -> torch.Tensor:
    """-(2 / beta) * mean log sigmoid(beta * d)."""
    return -(2.0 / beta) * F.logsigmoid(beta * d).mean()


class NPO(UnlearningMethod):
    def __init__(
        self,
        *args: Any,
        reference: ReferenceStrategy,
        beta: float = 0.9,
        alpha_forget: float = 1.0,
        alpha_retain_npo: float = 0.0,
        reduction: str = "token_mean",
        forget_tokens: str = "answer",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # beta = 0 divides by zero; beta < 0 turns "push the forget likelihood down" into "pull it up".
        require(beta > 0, "beta", beta, "> 0")
        require_weights(alpha_forget=alpha_forget, alpha_retain_npo=alpha_retain_npo)
        if reduction not in REDUCTIONS:
            raise ValueError(f"npo reduction must be one of {REDUCTIONS}, got {reduction!r}")
        if forget_tokens not in TOKEN_CHOICES:
            raise ValueError(
                f"npo forget_tokens must be one of {sorted(TOKEN_CHOICES)}, got {forget_tokens!r}"
            )
        self.beta, self.alpha_forget, self.alpha_retain_npo = beta, alpha_forget, alpha_retain_npo
        self.reduction = reduction
        self.forget_label_key = TOKEN_CHOICES[forget_tokens]
        uses_retain = self.retain_weight > 0 or alpha_retain_npo > 0
        self.train_splits = ("forget", "retain") if uses_retain else ("forget",)
        needs = [ReferenceNeed("forget", "nll", self.forget_label_key)]
        if alpha_retain_npo > 0:
            needs.append(ReferenceNeed("retain", "nll", "labels"))
        self.attach_reference(reference, needs)

    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        nll, count, ref_nll, ref_count = self.nll_with_reference(batch["forget"], self.forget_label_key)
        d_forget = npo_log_ratio(nll, count, ref_nll, ref_count, self.reduction)
        forget_npo = npo_loss(d_forget, self.beta)
        return {
            "forget_npo": forget_npo,
            "forget_nll": nll.sum() / count.sum(),
            "forget_log_ratio": d_forget.mean(),
            "forget_loss": self.alpha_forget * forget_npo,
        }

    def retain_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        retain = batch["retain"]
        r_nll, r_count = sequence_nll(self(retain).logits, retain["labels"])
        terms = self.retain_ce_terms(r_nll.sum() / r_count.sum())
        if self.alpha_retain_npo > 0:
            ref_r_nll, ref_r_count = self.reference.sequence_nll(self, retain, "labels")
            d_retain = npo_log_ratio(r_nll, r_count, ref_r_nll, ref_r_count, self.reduction)
            retain_npo = (2.0 / self.beta) * F.logsigmoid(self.beta * d_retain).mean()
            terms["retain_npo"] = retain_npo
            terms["retain_loss"] = terms["retain_loss"] + self.alpha_retain_npo * retain_npo
        return terms
