"""Known third-party noise is dropped by default and only that: other Lightning messages and warnings stay."""

from __future__ import annotations

import logging
import warnings

from mirage.utils.quiet import LIGHTNING_NOISE, quiet_third_party


def test_listed_lightning_messages_are_dropped_and_others_kept(caplog):
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert sum(type(f).__name__ == "_DropNoise" for f in logger.filters) == 1
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        for start in LIGHTNING_NOISE:
            logger.info(start + " and the rest of the message")
        logger.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_listed_warnings_are_ignored_and_others_shown():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("something a user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something a user should see"]
