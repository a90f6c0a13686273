"""The base of every unlearning method: a forget split to unlearn, a retain split to keep.

A method writes its loss in two parts: ``forget_terms(batch)`` reads only the forget batch (its views
included) and returns ``forget_loss``, the weighted forget part of the objective; ``retain_terms(batch)``
reads only the retain batch and returns ``retain_loss`` (by default ``retain_weight * CE(retain)``).
``compute_loss`` adds them: ``loss = forget_loss + retain_loss``. The split is what lets sharpness-aware
unlearning (``sam``, ``mirage.methods.sam``) re-evaluate the forget part alone at perturbed weights.

What they all share lives here, once: ``retain_weight`` (lambda, the weight of the cross-entropy on
retain answers), ``trainable_regex`` (train only the parameters it matches), ``sam`` (``method.sam.rho``),
and the reference reads a preference or NPO-style loss is built from (``nll_with_reference``,
``log_ratio``).
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.methods.base import MethodModule, require, require_weights
from mirage.methods.losses import sequence_nll
from mirage.methods.sam import SharpnessAware

# What a method file needs from here: the base, and the hyperparameter checks.
__all__ = ["UnlearningMethod", "require", "require_weights"]


class UnlearningMethod(MethodModule):
    """A MethodModule with ``retain_weight``, ``trainable_regex`` and ``sam``; subclasses write
    ``forget_terms`` (and ``retain_terms`` when the retain part is more than lambda * CE)."""

    train_splits: tuple[str, ...] = ("forget", "retain")
    unlearning = True

    def __init__(
        self,
        *args: Any,
        retain_weight: float = 1.0,
        trainable_regex: str | None = None,
        sam: SharpnessAware | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        require_weights(retain_weight=retain_weight)
        self.retain_weight = retain_weight
        # None and rho = 0 are the same plain method: the SAM code path is never entered.
        self.sam = sam if sam is not None and sam.rho > 0 else None
        if self.sam is not None and type(self).forget_terms is UnlearningMethod.forget_terms:
            raise TypeError(
                f"method.sam.rho > 0 needs {type(self).__name__} to split its loss into forget_terms and "
                "retain_terms (it only writes compute_loss)"
            )
        self.restrict_trainable(trainable_regex)

    # --- the part a method writes -----------------------------------------------------------
    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Terms of the forget part, ``forget_loss`` among them; read ``batch["forget"]`` only."""
        raise NotImplementedError(f"{type(self).__name__} must implement forget_terms")

    def retain_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Terms of the retain part, ``retain_loss`` among them; read ``batch["retain"]`` only."""
        return self.retain_ce_terms(self.answer_loss(batch["retain"]))

    # --- shared machinery ----------------------------------------------------------------------
    def retain_ce_terms(self, retain_ce: torch.Tensor) -> dict[str, torch.Tensor]:
        """``retain_weight * CE(retain)`` as ``retain_loss``, the CE logged as ``retain_ce`` (a method that
        needs the retain logits anyway passes the CE it computed from them)."""
        return {"retain_ce": retain_ce, "retain_loss": self.retain_weight * retain_ce}

    def retain_part(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        """``retain_terms``, or nothing for a method configured to train on the forget split alone."""
        return self.retain_terms(batch) if "retain" in self.train_splits else {}

    @staticmethod
    def combine(forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both parts' terms and ``loss = forget_loss + retain_loss`` (0 when there is no retain part)."""
        terms = {**forget, **retain}
        if "retain_loss" not in terms:
            terms["retain_loss"] = torch.zeros_like(terms["forget_loss"].detach())
        terms["loss"] = terms["forget_loss"] + terms["retain_loss"]
        return terms

    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.combine(self.forget_terms(batch), self.retain_part(batch))

    def step_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.sam is None:
            return self.compute_loss(batch)
        return self.sam.step_terms(self, batch)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.sam is not None and self._trainer is not None:
            self.sam.check_strategy(self.trainer.strategy)

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
