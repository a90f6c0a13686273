"""Attacks rewrite benchmark samples before generation; one file per attack, each an ``Attack``."""

from mirage.evaluation.attacks.base import Attack

__all__ = ["Attack"]
