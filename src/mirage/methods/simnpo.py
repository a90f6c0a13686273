"""SimNPO (Fan et al., 2024): NPO without a reference model, normalised by answer length.

L = alpha_f * -(2 / beta) * mean log sigmoid(beta * NLL_theta(y|x) / |y| - gamma) + lambda * CE(retain)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from mirage.methods.losses import sequence_nll
from mirage.methods.unlearning import UnlearningMethod, require, require_weights


class SimNPO(UnlearningMethod):
    def __init__(
        self, *args: Any, beta: float = 2.5, gamma: float = 0.0, alpha_forget: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        require(beta > 0, "beta", beta, "> 0")
        require(math.isfinite(gamma), "gamma", gamma, "finite")
        require_weights(alpha_forget=alpha_forget)
        self.beta, self.gamma, self.alpha_forget = beta, gamma, alpha_forget

    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        forget = batch["forget"]
        nll, count = sequence_nll(self(forget).logits, forget["labels"])
        mean_nll = nll / count.clamp(min=1)
        simnpo = -(2.0 / self.beta) * F.logsigmoid(self.beta * mean_nll - self.gamma).mean()
        forget_loss = self.alpha_forget * simnpo
        return {"forget_simnpo": simnpo, "forget_nll": mean_nll.mean(), "forget_loss": forget_loss}
