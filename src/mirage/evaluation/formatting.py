"""How mirage prints a rate: one function for every table, so that they all agree."""

from __future__ import annotations

import math
from numbers import Real

MISSING = "-"  # a rate that was not measured (absent, or NaN: no answer to count)


def percent(fraction: float | None) -> str:
    """``fraction`` (0.25) as a percentage with one decimal (``"25.0"``); ``MISSING`` when it is ``None`` or
    NaN. Anything else that is not a number is an error, never a made-up cell."""
    if fraction is None:
        return MISSING
    if isinstance(fraction, bool) or not isinstance(fraction, Real):
        raise TypeError(f"percent: expected a fraction, got {fraction!r} ({type(fraction).__name__})")
    if math.isnan(fraction):
        return MISSING
    return f"{100 * fraction:.1f}"
