"""Training methods: one file per method, each a MethodModule subclass with a config of the same name."""

from mirage.methods.base import CheckpointMismatchError, MethodModule
from mirage.methods.sft import SFT

__all__ = ["SFT", "CheckpointMismatchError", "MethodModule"]
