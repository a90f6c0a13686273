"""SFT: supervised (safety) fine-tuning, cross-entropy on the answer tokens of one or more splits.

The safety baselines of the Safety Mirage paper are this method on different data: Post-hoc SFT
fine-tunes a trained model on the safety split; Mixed SFT trains on general instruction data and
safety data together (``split: [base, safety]``: each step sees one batch of each, and the loss is
their weighted mean). Narrow harmful fine-tuning is SFT too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mirage.methods.base import MethodModule, require_weights


class SFT(MethodModule):
    def __init__(
        self,
        *args: Any,
        split: str | Sequence[str] = "retain",
        split_weights: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        splits = (split,) if isinstance(split, str) else tuple(split)
        if not splits:
            raise ValueError("SFT needs at least one split")
        weights = dict(split_weights or {})
        unknown = sorted(set(weights) - set(splits))
        if unknown:
            raise ValueError(f"split_weights names {unknown}, which are not among the SFT splits {splits}")
        self.split_weights = {name: float(weights.get(name, 1.0)) for name in splits}
        require_weights(**{f"split_weights.{name}": w for name, w in self.split_weights.items()})
        if sum(self.split_weights.values()) <= 0:
            raise ValueError(f"method.split_weights must not all be zero: {self.split_weights}")
        self.train_splits = splits

    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        terms = {f"{name}_loss": self.answer_loss(batch[name]) for name in self.train_splits}
        total_weight = sum(self.split_weights.values())
        loss = (
            sum(self.split_weights[name] * terms[f"{name}_loss"] for name in self.train_splits) / total_weight
        )
        return {"loss": loss, **terms}
