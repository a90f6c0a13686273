"""Known third-party console noise, dropped by default (``extras.ignore_warnings``), each with the reason.
Imports nothing of mirage."""

from __future__ import annotations

import logging
import warnings

#: Lightning's rank-zero messages that say nothing about the run (message start -> why it is dropped).
LIGHTNING_NOISE = {
    "💡 Tip: ": "an advertisement for Lightning's cloud services, printed by every Trainer",
    "`Trainer(limit_": "restates a limit of 1.0 (every batch), the default",
    "Loading `train_dataloader` to estimate": "an internal step of the LR scheduler's setup",
    "Trainer already configured with model summary callbacks": "mirage configures its own summary",
}
#: Python warnings (message regex -> why it is ignored).
WARNINGS = {
    r"`isinstance\(treespec, LeafSpec\)` is deprecated": "Lightning 2.6's own call into torch's pytree API, "
    "deprecated in torch 2.13; nothing a run can change",
}


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(tuple(LIGHTNING_NOISE))


def quiet_third_party(enabled: bool = True) -> None:
    """Drop the messages and warnings listed above (idempotent); ``enabled=False`` leaves everything."""
    if not enabled:
        return
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    for pattern in WARNINGS:
        warnings.filterwarnings("ignore", message=f".*{pattern}", category=Warning)
