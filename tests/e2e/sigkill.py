"""A callback that SIGKILLs its own training process at a chosen step, for the resume tests: the kill lands at
an exact step (mid-epoch when asked), after the checkpoint of the previous step, in the middle of a step."""

from __future__ import annotations

import os
import signal

import lightning.pytorch as L


class SigkillAtStep(L.Callback):
    """Kills the process (SIGKILL: no handler, no cleanup) between backward and optimizer step of step
    ``step + 1``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
