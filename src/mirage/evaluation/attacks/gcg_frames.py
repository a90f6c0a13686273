"""The prompts a GCG suffix is optimised on, as token ids: where the suffix sits, which suffixes are valid.

The attack appends the suffix text to the question verbatim (``question + suffix``; an optimised suffix
carries its own leading space), and the prompt is the chat template with the image, rendered and encoded by
mirage's collator. The search works on ``length`` token ids instead of text, so both must agree: a suffix
(ids) is valid when its text, put after every corpus question and rendered by the template, is encoded again
into exactly the same tokens before it, the suffix's ids, and the same tokens after it (the in-context
version of re-tokenisation filtering, checked on every prompt of the corpus). Tokens that are special (the
image token too), beyond the tokenizer, empty, or (by default) not printable ASCII are never proposed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from mirage.data.collate import IGNORE_INDEX, VLMCollator, build_messages
from mirage.data.records import Sample

MARK = "\u2063MIRAGE-GCG-SUFFIX\u2063"  # a string no question contains, to find the suffix in the template
CONTEXT = 8  # tokens before the suffix decoded with it, so the tokenizer spells its first token as in context


@dataclasses.dataclass
class Frame:
    """One collated chunk of prompts (each with the start suffix) and the suffix's positions in each row."""

    batch: dict[str, Any]  # the collator's batch: model inputs and labels on the target answers
    positions: torch.Tensor  # [rows, length]: column of each suffix token in input_ids


class SuffixFrames:
    """The corpus (``samples``: question, image, target ``answer``) with a suffix of ``length`` tokens
    that starts as ``init`` (its first ``length`` tokens in context), in chunks of ``batch_size`` prompts."""

    def __init__(
        self,
        processor: Any,
        samples: Sequence[Sample],
        init: str,
        length: int,
        batch_size: int,
        allow_non_ascii: bool = False,
    ) -> None:
        if not samples:
            raise ValueError("gcg: no prompts to optimise the suffix on")
        self.processor, self.tokenizer = processor, getattr(processor, "tokenizer", processor)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("gcg: needs a fast tokenizer (its offsets locate the suffix in the prompt)")
        self.samples, self.length = list(samples), int(length)
        self.contexts = [self._split(s) for s in self.samples]
        self.init_text = self._first_tokens(init)
        pre, ids, post = zip(*(self._locate(b, self.init_text, a) for b, a in self.contexts), strict=True)
        if any(i != ids[0] for i in ids):
            bad = next(s.id for s, i in zip(self.samples, ids, strict=True) if i != ids[0])
            raise ValueError(
                f"gcg: the start suffix {self.init_text!r} encodes otherwise after prompt {bad!r}"
            )
        if len(ids[0]) != self.length:  # cut inside a word that then encodes otherwise
            raise ValueError(f"gcg: the start suffix {self.init_text!r} is not {self.length} whole tokens")
        self.pre, self.post = list(pre), list(post)
        self.init_ids = torch.tensor(ids[0])
        self.allowed = self._allowed(allow_non_ascii)
        if not bool(self.allowed[self.init_ids].all()):
            raise ValueError(f"gcg: the start suffix {self.init_text!r} has special or unprintable tokens")
        collate = VLMCollator(processor)
        self.frames = []
        for start in range(0, len(self.samples), batch_size):
            chunk = [self.with_suffix(s, self.init_text) for s in self.samples[start : start + batch_size]]
            batch = collate(chunk)
            self.frames.append(Frame(batch, self._positions(batch, self.post[start : start + batch_size])))

    @staticmethod
    def with_suffix(sample: Sample, suffix: str) -> Sample:
        """The sample asked with ``suffix`` appended to its question, as the attack asks it."""
        return Sample(sample.id, sample.question + suffix, sample.answer, sample.image)

    def _render(self, sample: Sample) -> str:  # the collator's prompt text (generation prompt, no answer)
        return self.processor.apply_chat_template(
            build_messages(sample, None), tokenize=False, add_generation_prompt=True
        )

    def _split(self, sample: Sample) -> tuple[str, str]:
        """The rendered prompt's text before and after the suffix."""
        text = self._render(self.with_suffix(sample, MARK))
        if text.count(MARK) != 1:
            raise ValueError(f"gcg: the chat template does not keep the question of {sample.id!r} verbatim")
        before, after = text.split(MARK)
        probe = self._render(self.with_suffix(sample, " x"))  # a template that trims or rewrites text
        if probe != before + " x" + after:
            raise ValueError(f"gcg: the chat template changes the suffix of {sample.id!r}; cannot place it")
        return before, after

    def _encode(self, text: str, offsets: bool = False) -> dict[str, Any]:
        return self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)

    def _locate(self, before: str, suffix: str, after: str) -> tuple[list[int], list[int], list[int]]:
        """Token ids of the prompt before, of and after ``suffix``; the suffix must be whole tokens."""
        encoded = self._encode(before + suffix + after, offsets=True)
        start, end = len(before), len(before) + len(suffix)
        ids, spans = encoded["input_ids"], encoded["offset_mapping"]
        first = next((i for i, (a, b) in enumerate(spans) if b > start), len(ids))
        last = next((i for i, (a, b) in enumerate(spans) if a >= end), len(ids))
        if first == len(ids) or spans[first][0] != start or (last > first and spans[last - 1][1] != end):
            raise ValueError(f"gcg: the suffix {suffix!r} merges with the text around it into other tokens")
        return ids[:first], ids[first:last], ids[last:]

    def _first_tokens(self, init: str) -> str:
        """``init`` cut to its first ``length`` tokens after the first question (an error when shorter)."""
        before, after = self.contexts[0]
        pre, ids, _ = self._locate(before, init, after)
        if len(ids) < self.length:
            raise ValueError(
                f"gcg: the start suffix {init!r} has {len(ids)} tokens, fewer than {self.length}"
            )
        spans = self._encode(before + init + after, offsets=True)["offset_mapping"]
        return init[: spans[len(pre) + self.length - 1][1] - len(before)]

    def _allowed(self, allow_non_ascii: bool) -> torch.Tensor:
        """[len(tokenizer)] bool: the tokens a suffix may use."""
        special = set(getattr(self.tokenizer, "all_special_ids", []))
        special |= set(self.tokenizer.added_tokens_decoder)  # the image token and the template's markers
        for name in ("image_token_id", "video_token_id"):
            if getattr(self.processor, name, None) is not None:
                special.add(int(getattr(self.processor, name)))
        texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
        allowed = [
            i not in special
            and bool(text)
            and "\ufffd" not in text  # a piece of a multi-byte character
            and (allow_non_ascii or (text.isascii() and text.isprintable()))
            for i, text in enumerate(texts)
        ]
        return torch.tensor(allowed, dtype=torch.bool)

    def _positions(self, batch: dict[str, Any], posts: Sequence[list[int]]) -> torch.Tensor:
        """Columns of the suffix in each row of a collated batch: right before the template's tail."""
        rows = []
        for row, post in enumerate(posts):
            labelled = (batch["labels"][row] != IGNORE_INDEX).nonzero()
            end = int(labelled[0]) - len(post)
            ids = batch["input_ids"][row]
            tail = ids[end : end + len(post)].tolist()
            if (
                end < self.length
                or ids[end - self.length : end].tolist() != self.init_ids.tolist()
                or tail != post
            ):
                raise ValueError(
                    f"gcg: the collated prompt {batch['sample_ids'][row]!r} has no suffix where expected"
                )
            rows.append(torch.arange(end - self.length, end))
        return torch.stack(rows)

    def text(self, ids: torch.Tensor) -> str:
        """The text that ``ids`` add after the first prompt's question (leading space included)."""
        head = self.pre[0][-CONTEXT:]
        options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
        prefix = self.tokenizer.decode(head, **options)
        full = self.tokenizer.decode(head + ids.tolist(), **options)
        return full[len(prefix) :] if full.startswith(prefix) else ""

    def valid(self, candidates: torch.Tensor) -> torch.Tensor:
        """The distinct candidates ([n, length] ids, in order) of allowed tokens whose text every prompt's
        template encodes back into the same tokens before, of and after the suffix."""
        seen: dict[tuple[int, ...], torch.Tensor] = {}
        for row in candidates:
            if int(row.max()) < len(self.allowed) and bool(self.allowed[row].all()):
                seen.setdefault(tuple(row.tolist()), row)
        rows = list(seen.values())
        texts = [self.text(r) for r in rows]
        keep = [bool(t) for t in texts]
        for (before, after), pre, post in zip(self.contexts, self.pre, self.post, strict=True):
            encoded = self.tokenizer([before + t + after for t in texts], add_special_tokens=False)[
                "input_ids"
            ]
            for i, (ids, row) in enumerate(zip(encoded, rows, strict=True)):
                keep[i] = keep[i] and ids == pre + row.tolist() + post
        kept = [r for r, k in zip(rows, keep, strict=True) if k]
        return torch.stack(kept) if kept else candidates.new_empty((0, self.length))
