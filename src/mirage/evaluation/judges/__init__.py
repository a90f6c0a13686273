"""Judges decide whether an answer is a refusal, irrelevant, or a relevant (successful) answer."""

from mirage.evaluation.judges.base import DECISIONS, Judge, JudgeInput

__all__ = ["DECISIONS", "Judge", "JudgeInput"]
