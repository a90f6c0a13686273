"""Batched greedy generation with left padding, identical to one-at-a-time decoding.

Prompts are rendered by the same collator as training (the processor's chat template), so a
model is asked exactly what it was trained on. A sample's ``meta['prefill']`` starts the
assistant turn; the returned answer includes it. Stop strings cut the answer after decoding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mirage.data.collate import LABEL_KEYS, META_KEYS, VLMCollator
from mirage.data.records import Sample

log = logging.getLogger(__name__)


@dataclass
class GenerationConfig:
    """Decoding settings; greedy by default (the paper's evaluation)."""

    max_new_tokens: int = 256
    batch_size: int = 16
    stop_strings: list[str] = field(default_factory=list)
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_return_sequences: int = 1
    max_length: int = 4096
    system_prompt: str | None = None

    def __post_init__(self) -> None:
        positive = {"max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size}
        positive.update(num_return_sequences=self.num_return_sequences, max_length=self.max_length)
        for key, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"generation.{key} must be a positive integer, got {value!r}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"generation.temperature must be > 0 when sampling, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"generation.top_p must be in (0, 1], got {self.top_p!r}")


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """The text up to (not including) the earliest stop string."""
    cut = len(text)
    for stop in stop_strings:
        position = text.find(stop)
        if position != -1:
            cut = min(cut, position)
    return text[:cut]


@torch.no_grad()
def generate_batch(
    model: torch.nn.Module, processor: Any, samples: Sequence[Sample], config: GenerationConfig
) -> list[str]:
    """Answers for one batch of samples (``num_return_sequences`` per sample, flattened in order)."""
    collate = VLMCollator(
        processor, max_length=config.max_length, system_prompt=config.system_prompt, train=False
    )
    batch = collate(list(samples))
    device = next(model.parameters()).device
    inputs = {
        k: v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
        if k not in META_KEYS and k not in LABEL_KEYS
    }
    tokenizer = getattr(processor, "tokenizer", processor)
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": config.do_sample,
        "num_return_sequences": config.num_return_sequences,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_p=config.top_p)
    else:  # silence "generation flags are not valid" warnings from checkpoints that set sampling defaults
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if config.stop_strings:
        kwargs.update(stop_strings=list(config.stop_strings), tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    try:
        output = model.generate(**inputs, **kwargs)
    finally:
        model.train(was_training)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    answers = []
    for index, text in enumerate(texts):
        prefill = samples[index // config.num_return_sequences].meta.get("prefill") or ""
        answers.append((prefill + cut_at_stop(text, config.stop_strings)).strip())
    return answers


def generate(
    model: torch.nn.Module,
    processor: Any,
    samples: Sequence[Sample],
    config: GenerationConfig,
    on_batch: Callable[[Sequence[Sample], list[str]], None] | None = None,
    description: str = "generating",
) -> list[str]:
    """Answers for all samples, in order, with a rich progress bar; ``on_batch`` sees each finished batch."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    answers: list[str] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=len(samples))
        for chunk in batches(samples, config.batch_size):
            out = generate_batch(model, processor, chunk, config)
            answers.extend(out)
            if on_batch is not None:
                on_batch(chunk, out)
            progress.advance(task, len(chunk))
    return answers
