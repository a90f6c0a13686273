"""The base of every unlearning method: a forget split to unlearn, a retain split to keep.

What they all share lives here, once: ``retain_weight`` (lambda, the weight of the cross-entropy on
retain answers, added by ``add_retain_ce``), ``trainable_regex`` (train only the parameters it matches),
and the reference reads a preference or NPO-style loss is built from (``nll_with_reference``,
``log_ratio``).
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.methods.base import MethodModule, require, require_weights
from mirage.methods.losses import sequence_nll

# What a method file needs from here: the base, and the hyperparameter checks.
__all__ = ["UnlearningMethod", "require", "require_weights"]


class UnlearningMethod(MethodModule):
    """A MethodModule with ``retain_weight`` and ``trainable_regex``; subclasses write ``compute_loss``."""

    train_splits: tuple[str, ...] = ("forget", "retain")
    unlearning = True

    def __init__(
        self, *args: Any, retain_weight: float = 1.0, trainable_regex: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        require_weights(retain_weight=retain_weight)
        self.retain_weight = retain_weight
        self.restrict_trainable(trainable_regex)

    def add_retain_ce(
        self,
        terms: dict[str, torch.Tensor],
        loss: torch.Tensor,
        batch: dict[str, dict[str, Any]],
        retain_ce: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``loss + retain_weight * CE(retain)``, the CE logged as ``retain_ce``: computed on the retain
        batch unless the method passes the value it already has (from a pass it needs anyway)."""
        if retain_ce is None:
            retain_ce = self.answer_loss(batch["retain"])
        terms["retain_ce"] = retain_ce
        return loss + self.retain_weight * retain_ce

    def nll_with_reference(
        self, batch: dict[str, Any], label_key: str = "labels"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(NLL, token count) per sequence under the model, then under the reference, on one batch or view."""
        nll, count = sequence_nll(self(batch).logits, batch[label_key])
        ref_nll, ref_count = self.reference.sequence_nll(self, batch, label_key)
        return nll, count, ref_nll, ref_count

    def log_ratio(self, batch: dict[str, Any], label_key: str = "labels") -> torch.Tensor:
        """log pi_theta(y|x) - log pi_ref(y|x) per sequence (y the labelled tokens): NLL_ref - NLL_theta."""
        nll, _, ref_nll, _ = self.nll_with_reference(batch, label_key)
        return ref_nll - nll
