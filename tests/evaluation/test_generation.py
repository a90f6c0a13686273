"""Batched, left-padded greedy generation gives exactly the answers of one-at-a-time decoding."""

from __future__ import annotations

import pytest
import torch

from mirage.data.readers import read_vlguard
from mirage.data.records import Sample
from mirage.evaluation.generation import GenerationConfig, cut_at_stop, generate, generate_batch
from mirage.models.loading import load_vlm
from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_batched_answers_equal_one_at_a_time(family, cache_dir, synthetic_dir):
    model, processor = load_vlm(build_tiny_vlm(TinyVLMSpec(family=family), cache_dir / "tiny_models"))
    samples = read_vlguard(synthetic_dir / "test.json")[:7]
    samples.append(
        Sample(id="text", question="tell me a long story about a cat and a dog, please", answer=None)
    )
    config = GenerationConfig(max_new_tokens=12, batch_size=8)
    batched = generate_batch(model, processor, samples, config)
    single = [generate_batch(model, processor, [s], config)[0] for s in samples]
    assert batched == single
    assert len(set(batched)) > 1  # prompts of different lengths, images and none: real variety


def test_generate_streams_batches_in_order(tiny_llava_dir, synthetic_dir):
    model, processor = load_vlm(tiny_llava_dir)
    model.train()  # as it is inside a training run
    samples = read_vlguard(synthetic_dir / "test.json")[:5]
    seen = []
    answers = generate(
        model,
        processor,
        samples,
        GenerationConfig(max_new_tokens=4, batch_size=2),
        on_batch=lambda batch, out: seen.append(([s.id for s in batch], out)),
    )
    assert [len(ids) for ids, _ in seen] == [2, 2, 1]
    assert [a for _, out in seen for a in out] == answers
    assert model.training  # generation ran in eval mode and gave the training mode back
    assert torch.is_grad_enabled()  # and left autograd as it found it


def test_prefill_starts_the_answer(tiny_llava_dir, synthetic_dir):
    model, processor = load_vlm(tiny_llava_dir)
    sample = read_vlguard(synthetic_dir / "test.json")[0]
    sample.meta = {**sample.meta, "prefill": "Sure,"}
    answer = generate_batch(model, processor, [sample], GenerationConfig(max_new_tokens=3))[0]
    assert answer.startswith("Sure,")


def test_cut_at_stop():
    assert cut_at_stop("one. USER: two", ["USER:", "###"]) == "one. "
    assert cut_at_stop("a ### b USER:", ["USER:", "###"]) == "a "
    assert cut_at_stop("plain", []) == "plain"
