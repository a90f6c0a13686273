"""SFT: supervised (safety) fine-tuning, cross-entropy on the answer tokens of one split.

The safety baselines of the Safety Mirage paper (Mixed and Post-hoc SFT on VLGuard) are
this method on different data; narrow harmful fine-tuning is too.
"""

from __future__ import annotations

from typing import Any

import torch

from mirage.methods.base import MethodModule


class SFT(MethodModule):
    def __init__(self, *args: Any, split: str = "retain", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.split = split
        self.train_splits = (split,)

    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        loss = self.answer_loss(batch[self.split])
        return {"loss": loss, f"{self.split}_loss": loss}
