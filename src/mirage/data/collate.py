"""Turn samples into model batches with the processor's own chat template.

Labels cover the answer only: every token of the rendered prompt (system text, the
user's words, image tokens, the assistant header) and every padding token gets -100.
The answer region is found by rendering the prompt alone (``add_generation_prompt``)
and checking that the full conversation's tokens start with the prompt's tokens.

Preference pairs: when every sample of a training batch has an ``alternate`` answer, the batch
carries a second view, ``batch["alternate"]``: the same prompts and images with the alternate as the
answer, a complete batch of its own (input ids, attention mask, pixel values, labels, sample keys),
so a method scores it exactly as it scores the batch (``batch_view``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
from PIL import Image

from mirage.data.records import DataError, Sample
from mirage.utils.hashing import stable_hash

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
# Other views of the same samples that a training batch may carry (each a complete batch of its own).
VIEW_KEYS = ("alternate",)
# Batch keys that do not feed the model: what describes the samples, and the other views of them.
META_KEYS = ("sample_ids", "sample_meta", "sample_keys", "image_keys", *VIEW_KEYS)
# Batch keys that hold targets rather than model inputs: answer tokens, and the prompt's text tokens
# (for losses that act on the question, e.g. NPO on queries as in the Safety Mirage paper's text).
LABEL_KEYS = ("labels", "prompt_labels")


def sample_key(sample: Sample) -> str:
    """A content hash of a sample: caches keyed by it can never serve another sample's values."""
    history = sample.meta.get("history") or []
    parts = [sample.id, sample.question, sample.answer, str(sample.image), history]
    if sample.alternate is not None:  # only then, so that keys of samples without one stay as they were
        parts.append(sample.alternate)
    return stable_hash(parts)[:24]


def batch_view(batch: dict[str, Any], view: str | None) -> dict[str, Any]:
    """One view of a collated training batch: the batch itself (``None``) or e.g. ``"alternate"``."""
    if view is None:
        return batch
    if view not in batch:
        sources = sorted({str(m.get("source", "?")) for m in batch.get("sample_meta", [])})
        raise KeyError(
            f"this batch has no {view!r} view: every record of its split ({', '.join(sources)}) needs an "
            f"{view!r} answer (a conversation record's {view!r} field; mirage-build-splits writes VLGuard's "
            "refusal there)"
        )
    return batch[view]


def build_messages(sample: Sample, answer: str | None, system_prompt: str | None = None) -> list[dict]:
    """Chat messages in the content-list format every HF VLM chat template understands."""
    messages: list[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    history = sample.meta.get("history") or []
    for turn_index, (question, reply) in enumerate(history):
        content = [{"type": "text", "text": question}]
        if turn_index == 0 and sample.image is not None:
            content.insert(0, {"type": "image"})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    content = [{"type": "text", "text": sample.question}]
    if sample.image is not None and not history:
        content.insert(0, {"type": "image"})
    messages.append({"role": "user", "content": content})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


@lru_cache(maxsize=256)  # small: real images are large, tiny ones are re-read every epoch
def _open_image(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@lru_cache(maxsize=4096)  # digests are small; an image is hashed once per process, as it is read once
def _image_digest(path: str) -> str:
    image = _open_image(path)
    digest = hashlib.sha256(f"{image.mode}:{image.size}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:24]


def image_key(sample: Sample) -> str | None:
    """A hash of the pixels of the image the sample is shown with (``None`` without one)."""
    if sample.image is None:
        return None
    load_image(sample)  # a bad image is a DataError naming the record
    return _image_digest(str(sample.image))


def load_image(sample: Sample) -> Image.Image | None:
    if sample.image is None:
        return None
    try:
        return _open_image(str(sample.image))
    except (OSError, ValueError) as err:
        raise DataError(
            sample.meta.get("source", "?"),
            f"cannot read image {sample.image}: {err}",
            index=sample.meta.get("index"),
            record_id=sample.id,
            field="image",
        ) from err


@dataclass
class VLMCollator:
    """Processor + chat template + answer-only labels. ``train=False`` renders prompts for generation."""

    processor: Any
    max_length: int = 2048
    system_prompt: str | None = None
    train: bool = True

    def __call__(self, samples: list[Sample]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        # Images grouped per sample ([[img], [], ...]): the one layout every family's processor reads right
        # (Gemma3 reads a flat list as all images belonging to the first prompt).
        images = [[img] if img is not None else [] for img in (load_image(s) for s in samples)]
        prompts = [self._render(s, answer=None) for s in samples]
        if not self.train:
            return self._describe(self._encode(prompts, images, padding_side="left"), samples)
        for sample in samples:
            if sample.answer is None:
                raise DataError(
                    sample.meta.get("source", "?"),
                    "training needs an answer",
                    index=sample.meta.get("index"),
                    record_id=sample.id,
                    field="answer",
                )
        prompt_batch = self._encode(prompts, images, padding_side="right")
        batch = self._answer_view(samples, images, prompt_batch, field="answer")
        if any(s.alternate is not None for s in samples):
            # The same prompts and images, the alternate as the answer (the prompt encoding is shared).
            pairs = [
                dataclasses.replace(s, answer=self._alternate(s, samples), alternate=None) for s in samples
            ]
            batch["alternate"] = self._answer_view(pairs, images, prompt_batch, field="alternate")
        return batch

    def _alternate(self, sample: Sample, batch: list[Sample]) -> str:
        """The sample's alternate answer; in a batch where others have one, a missing one is an error."""
        if sample.alternate is None:
            other = next(s for s in batch if s.alternate is not None)
            raise DataError(
                sample.meta.get("source", "?"),
                f"no alternate answer, while sample {other.id!r} of the same batch has one (a preference "
                "split needs one on every record)",
                index=sample.meta.get("index"),
                record_id=sample.id,
                field="alternate",
            )
        return sample.alternate

    def _answer_view(
        self, samples: list[Sample], images: list[list[Image.Image]], prompt_batch: dict, field: str
    ) -> dict[str, Any]:
        """Prompt + each sample's ``answer``, right-padded, with answer-only labels (``field`` names the
        record field the answers came from, for errors)."""
        full = [self._render(s, answer=s.answer) for s in samples]
        batch = self._encode(full, images, padding_side="right")
        batch["labels"], batch["prompt_labels"] = self._labels(batch, prompt_batch, samples, field)
        self._truncate(batch, prompt_batch, samples)
        return self._describe(batch, samples)

    @staticmethod
    def _describe(batch: dict[str, Any], samples: list[Sample]) -> dict[str, Any]:
        batch["sample_ids"] = [s.id for s in samples]
        batch["sample_meta"] = [s.meta for s in samples]
        batch["sample_keys"] = [sample_key(s) for s in samples]
        batch["image_keys"] = [image_key(s) for s in samples]
        return batch

    def _render(self, sample: Sample, answer: str | None) -> str:
        messages = build_messages(sample, answer, self.system_prompt)
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=answer is None
        )
        if answer is None and not self.train and sample.meta.get("prefill"):
            # A prefill attack: the assistant turn already starts with e.g. "Sure,"; generation continues it.
            text = (
                text + " " + sample.meta["prefill"]
                if not text.endswith((" ", "\n"))
                else text + sample.meta["prefill"]
            )
        return text

    def _encode(self, texts: list[str], images: list[list[Image.Image]], padding_side: str) -> dict[str, Any]:
        encoded = self.processor(
            text=texts,
            images=images if any(images) else None,
            return_tensors="pt",
            padding=True,
            padding_side=padding_side,
        )
        return dict(encoded)

    def _labels(
        self, batch: dict, prompt_batch: dict, samples: list[Sample], field: str = "answer"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer labels, and prompt labels (the prompt's text tokens after the first)."""
        input_ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        prompt_labels = torch.full_like(input_ids, IGNORE_INDEX)
        for row, sample in enumerate(samples):
            n_full = int(mask[row].sum())
            n_prompt = int(prompt_batch["attention_mask"][row].sum())
            full_ids, prompt_ids = input_ids[row, :n_full], prompt_batch["input_ids"][row, :n_prompt]
            if n_prompt >= n_full or not torch.equal(full_ids[:n_prompt], prompt_ids):
                # The template or tokenizer merged prompt and answer; label from the first difference.
                common = n_prompt if n_prompt < n_full else 0
                while common > 0 and not torch.equal(full_ids[:common], prompt_ids[:common]):
                    common -= 1
                log.warning(
                    "sample %s: prompt tokens are not a prefix of the conversation; labels start at token %d",
                    sample.id,
                    common,
                )
                n_prompt = common
            if n_prompt >= n_full:
                raise DataError(
                    sample.meta.get("source", "?"),
                    f"{field} renders to no tokens",
                    index=sample.meta.get("index"),
                    record_id=sample.id,
                    field=field,
                )
            labels[row, n_prompt:n_full] = full_ids[n_prompt:]
            prompt_labels[row, 1:n_prompt] = full_ids[1:n_prompt]
        image_token_id = getattr(self.processor, "image_token_id", None)
        if image_token_id is not None:
            labels[labels == image_token_id] = IGNORE_INDEX
        # The question's words only: no image, vision-delimiter or other special tokens.
        special = torch.tensor(sorted(self._special_ids()), dtype=prompt_labels.dtype)
        prompt_labels[torch.isin(prompt_labels, special)] = IGNORE_INDEX
        return labels, prompt_labels

    def _special_ids(self) -> set[int]:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        ids = set(getattr(tokenizer, "all_special_ids", []))
        image_token_id = getattr(self.processor, "image_token_id", None)
        if image_token_id is not None:
            ids.add(int(image_token_id))
        return ids

    def _truncate(self, batch: dict, prompt_batch: dict, samples: list[Sample]) -> None:
        """Cut answers that run past ``max_length``; a prompt that alone exceeds it is an error."""
        if batch["input_ids"].shape[1] <= self.max_length:
            return
        for row, sample in enumerate(samples):
            if int(prompt_batch["attention_mask"][row].sum()) >= self.max_length:
                raise DataError(
                    sample.meta.get("source", "?"),
                    f"prompt is longer than max_length={self.max_length} tokens (images included)",
                    index=sample.meta.get("index"),
                    record_id=sample.id,
                    field="question",
                )
        for key in ("input_ids", "attention_mask", *LABEL_KEYS):
            batch[key] = batch[key][:, : self.max_length]
        if "mm_token_type_ids" in batch:
            batch["mm_token_type_ids"] = batch["mm_token_type_ids"][:, : self.max_length]
        if "token_type_ids" in batch:
            batch["token_type_ids"] = batch["token_type_ids"][:, : self.max_length]
