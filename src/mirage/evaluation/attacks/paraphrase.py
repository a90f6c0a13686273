"""Model paraphrases that must start with a trigger word, with a rule-based fall-back.

A local Hugging Face model (loaded with ``load_vlm``, asked text-only through the same batched
``generate_batch`` as evaluation) rewrites each question K times. A rewrite is accepted when its
first word is the trigger, it has at least ``min_words`` words and it differs from the question's
other accepted shots; otherwise that shot is asked again (up to ``max_tries`` rounds, a fresh
seeded sample each round). A shot still missing after the last round takes the rule-based
:class:`OneWordAttack` rewrite for that shot. ``stats`` counts requested shots, accepted and
rejected generations, and fall-backs, so a report can say how much of the attack was the model's.

Decoding samples (``do_sample=True``) under ``torch.manual_seed(seed, round)`` inside a forked RNG,
so results are reproducible and the caller's RNG state is untouched. ``force_prefix`` prefills the
assistant turn with the trigger, constraining decoding rather than filtering it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack
from mirage.evaluation.attacks.one_word import OneWordAttack
from mirage.evaluation.generation import GenerationConfig, batches, generate_batch

log = logging.getLogger(__name__)

DEFAULT_PROMPT = (
    'Rewrite the following question so that its first word is "{trigger}". Keep its meaning and all of '
    "its details. Reply with the rewritten question only (version {shot} of {k}; word each version "
    "differently).\nQuestion: {question}"
)
_QUESTION_TRIGGERS = {
    "what",
    "how",
    "why",
    "who",
    "where",
    "when",
    "which",
    "is",
    "are",
    "can",
    "could",
    "do",
}
_LABEL = re.compile(
    r"^(?:\d+[.)]\s*|(?:paraphrase|rewritten question|rewrite|question|answer)\s*\d*\s*:\s*)+", re.I
)


class ParaphraseAttack(Attack):
    """K model paraphrases per question starting with ``trigger``; rule-based where the model fails."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: torch.nn.Module | None = None,
        processor: Any = None,
        trigger: str = "What",
        k: int = 3,
        max_tries: int = 3,
        max_new_tokens: int = 48,
        prompt_template: str = DEFAULT_PROMPT,
        batch_size: int = 16,
        do_sample: bool = True,
        temperature: float = 0.9,
        top_p: float = 0.95,
        seed: int = 0,
        min_words: int = 3,
        force_prefix: bool = False,
        dtype: str = "float32",
        device: str | None = None,
        name: str | None = None,
    ) -> None:
        if (model_path is None) == (model is None):
            raise ValueError("paraphrase: give either model_path or a loaded model (with its processor)")
        if model is not None and processor is None:
            raise ValueError("paraphrase: a loaded model needs its processor too")
        if k < 1 or max_tries < 1:
            raise ValueError(f"paraphrase: k and max_tries must be >= 1, got k={k}, max_tries={max_tries}")
        for field in ("{question}", "{trigger}"):
            if field not in prompt_template:
                raise ValueError(f"paraphrase: prompt_template must contain {field}")
        self.model_path, self.model, self.processor = model_path, model, processor
        self.trigger = trigger.strip()[:1].upper() + trigger.strip()[1:]
        self.k, self.max_tries, self.seed, self.min_words = int(k), int(max_tries), int(seed), int(min_words)
        self.prompt_template, self.force_prefix = prompt_template, force_prefix
        self.dtype, self.device = dtype, device
        self.config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            do_sample=do_sample,
            temperature=temperature,
            top_p=top_p,
        )
        self.fallback = OneWordAttack(trigger=self.trigger, k=self.k, seed=self.seed)
        self.name = name or f"paraphrase_{self.trigger.lower().replace(' ', '_')}_{self.k}shot"
        self.stats = {"requested": 0, "accepted": 0, "rejected": 0, "fell_back": 0}

    def _load(self) -> tuple[torch.nn.Module, Any]:
        if self.model is None:
            from mirage.models.loading import load_vlm

            self.model, self.processor = load_vlm(self.model_path, dtype=self.dtype)
            if self.device:
                self.model.to(self.device)
        return self.model, self.processor

    def clean(self, text: str) -> str:
        """The first line of a reply, without quotes, numbering or a "Paraphrase:" label."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        line = lines[0] if lines else ""
        line = _LABEL.sub("", line.strip().strip("*\"'` ")).strip().strip("\"'`")
        line = re.sub(r"\s+", " ", line)
        if line and line[-1] not in ".?!":
            first = self.trigger.split()[0].lower()
            line += "?" if first in _QUESTION_TRIGGERS else "."
        return line[:1].upper() + line[1:]

    def acceptable(self, text: str) -> bool:
        """Starts with the trigger as a whole word and is long enough to be a question."""
        pattern = rf"{re.escape(self.trigger)}(?![\w'])"
        return bool(re.match(pattern, text, re.IGNORECASE)) and len(text.split()) >= self.min_words

    def _generate(self, prompts: list[Sample], round_index: int) -> list[str]:
        model, processor = self._load()
        device = next(model.parameters()).device
        cuda = [device.index or 0] if device.type == "cuda" else []
        texts: list[str] = []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed * 1009 + round_index)  # a fresh, reproducible draw each round
            for chunk in batches(prompts, self.config.batch_size):
                texts.extend(generate_batch(model, processor, chunk, self.config))
        return texts

    def apply(self, samples: Iterable[Sample]) -> list[Sample]:
        samples = list(samples)
        chosen: dict[tuple[int, int], str] = {}
        pending = [(i, shot) for i in range(len(samples)) for shot in range(self.k)]
        stats = {"requested": len(pending), "accepted": 0, "rejected": 0, "fell_back": 0}
        for round_index in range(self.max_tries):
            if not pending:
                break
            prompts = [self._prompt(samples[i], shot) for i, shot in pending]
            still: list[tuple[int, int]] = []
            for (i, shot), reply in zip(pending, self._generate(prompts, round_index), strict=True):
                text = self.clean(reply)
                taken = {chosen.get((i, other)) for other in range(self.k)}
                if self.acceptable(text) and text not in taken:
                    chosen[(i, shot)] = text
                    stats["accepted"] += 1
                else:
                    stats["rejected"] += 1
                    still.append((i, shot))
            pending = still
        source: dict[tuple[int, int], str] = dict.fromkeys(chosen, "model")
        for i, shot in pending:
            chosen[(i, shot)] = self._rule_rewrite(
                samples[i], shot, {chosen.get((i, o)) for o in range(self.k)}
            )
            source[(i, shot)] = "rule"
            stats["fell_back"] += 1
        self.stats = stats
        if stats["fell_back"]:
            log.warning(
                "%s: %d of %d shots fell back to the rule-based rewrite (%d generations rejected)",
                self.name,
                stats["fell_back"],
                stats["requested"],
                stats["rejected"],
            )
        return [
            self.variant(sample, question=chosen[(i, shot)], shot=shot, rewrite_by=source[(i, shot)])
            for i, sample in enumerate(samples)
            for shot in range(self.k)
        ]

    def _rule_rewrite(self, sample: Sample, shot: int, taken: set[str | None]) -> str:
        """The rule-based rewrite for ``shot``, or another rule rewrite if the model already gave that one."""
        own = self.fallback.rewrite(sample)[shot].question
        if own not in taken:
            return own
        spare = [text for text in self.fallback.candidates(sample.question) if text not in taken]
        return spare[0] if spare else own

    def _prompt(self, sample: Sample, shot: int) -> Sample:
        text = self.prompt_template.format(
            question=sample.question, trigger=self.trigger, shot=shot + 1, k=self.k
        )
        meta = {"prefill": self.trigger} if self.force_prefix else {}
        return Sample(id=f"{sample.id}#paraphrase{shot}", question=text, answer=None, image=None, meta=meta)

    def rewrite(self, sample: Sample) -> list[Sample]:
        return self.apply([sample])
