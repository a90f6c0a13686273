"""Collation through the real processor: answer-only labels, checked token by token."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from PIL import Image

from mirage.data.collate import IGNORE_INDEX, VLMCollator
from mirage.data.records import DataError, Sample
from mirage.methods.base import MethodModule


@pytest.fixture()
def samples(tmp_path):
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red.png")
    return [
        Sample(
            id="a",
            question="what is shown in the image?",
            answer="the image shows a ball.",
            image=tmp_path / "red.png",
        ),
        Sample(id="b", question="describe it", answer="sure.", image=tmp_path / "red.png"),
        Sample(
            id="c", question="tell me a fact without a picture, please", answer="okay. cats purr.", image=None
        ),
    ]


def test_labels_cover_exactly_the_answer(processor, samples):
    batch = VLMCollator(processor)(samples)
    tok = processor.tokenizer
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape
    assert batch["pixel_values"].shape[0] == 2  # two samples have images
    for row, sample in enumerate(samples):
        n = int(mask[row].sum())
        assert mask[row, :n].all() and not mask[row, n:].any()  # right padding for training
        labelled = labels[row] != IGNORE_INDEX
        # Token by token: every labelled position holds the input token; nothing after padding starts.
        assert torch.equal(labels[row][labelled], ids[row][labelled])
        assert not labelled[n:].any()
        first = int(labelled.nonzero()[0])
        assert labelled[first:n].all() and not labelled[:first].any()  # one contiguous answer span
        # The span is the answer plus the template's end-of-turn token, and nothing of the prompt.
        assert tok.decode(ids[row, first:n]) == f" {sample.answer}</s>"
        prompt = tok.decode(ids[row, :first])
        assert prompt.endswith("ASSISTANT:") and sample.question in prompt
        image_positions = ids[row] == processor.image_token_id
        assert int(image_positions.sum()) == (16 if sample.image else 0)
        assert (labels[row][image_positions] == IGNORE_INDEX).all()
    assert batch["sample_ids"] == ["a", "b", "c"]


def test_generation_batches_are_left_padded_prompts(processor, samples):
    batch = VLMCollator(processor, train=False)(samples)
    assert "labels" not in batch
    mask = batch["attention_mask"]
    for row in range(len(samples)):
        n = int(mask[row].sum())
        assert mask[row, -n:].all() and not mask[row, :-n].any()  # left padding
        assert processor.tokenizer.decode(batch["input_ids"][row, -n:]).endswith("ASSISTANT:")


def test_long_answers_are_cut_and_long_prompts_rejected(processor, samples):
    long = Sample(id="long", question="what?", answer=" ".join(["ball"] * 200), image=samples[0].image)
    batch = VLMCollator(processor, max_length=64)([long, samples[0]])
    assert batch["input_ids"].shape[1] == 64 and batch["labels"].shape[1] == 64
    assert (batch["labels"][0] != IGNORE_INDEX).sum() > 0
    huge = Sample(
        id="huge",
        question=" ".join(["what"] * 200),
        answer="x",
        image=samples[0].image,
        meta={"source": "q.json", "index": 7},
    )
    with pytest.raises(
        DataError, match=r"q\.json: record 7 \(id 'huge'\): field 'question': prompt is longer"
    ):
        VLMCollator(processor, max_length=64)([huge])


def test_training_sample_without_answer_is_an_error(processor, samples):
    samples[0].answer = None
    samples[0].meta = {"source": "f.json", "index": 3}
    with pytest.raises(DataError, match=r"f\.json: record 3 \(id 'a'\): field 'answer'"):
        VLMCollator(processor)(samples)


def test_unreadable_image_is_named(processor, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    sample = Sample(id="z", question="what?", answer="x", image=bad, meta={"source": "d.json", "index": 0})
    with pytest.raises(DataError, match=r"d\.json: record 0 \(id 'z'\): field 'image': cannot read image"):
        VLMCollator(processor)([sample])


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3"])
def test_collator_and_answer_loss_for_every_family(family, cache_dir, samples):
    from mirage.methods.losses import answer_cross_entropy
    from mirage.methods.sft import SFT
    from mirage.models.loading import load_vlm
    from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm

    model, processor = load_vlm(build_tiny_vlm(TinyVLMSpec(family=family), cache_dir / "tiny_models"))
    batch = VLMCollator(processor)(samples)
    tok = processor.tokenizer
    for row, sample in enumerate(samples):
        labelled = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten()
        first, last = int(labelled[0]), int(labelled[-1])
        assert len(labelled) == last - first + 1  # one contiguous span
        answer_text = tok.decode(batch["input_ids"][row, first : last + 1], skip_special_tokens=True)
        assert answer_text.strip() == sample.answer  # the answer and nothing of the prompt
        assert sample.question in tok.decode(batch["input_ids"][row, :first])
    logits = model(**SFT.model_inputs(batch)).logits
    loss = answer_cross_entropy(logits, batch["labels"])
    assert torch.isfinite(loss) and loss.item() > 1.0
    # The alternate view in this family's layout: the same image inputs, the alternate as the labelled span.
    paired = _with_alternates(samples)
    view = VLMCollator(processor)(paired)["alternate"]
    for key in ("pixel_values", "image_grid_thw", "pixel_attention_mask"):
        if key in batch:
            assert torch.equal(view[key], batch[key]), key
    for row, sample in enumerate(paired):
        labelled = view["labels"][row] != IGNORE_INDEX
        assert (
            tok.decode(view["input_ids"][row][labelled], skip_special_tokens=True).strip() == sample.alternate
        )
    assert torch.isfinite(answer_cross_entropy(model(**SFT.model_inputs(view)).logits, view["labels"]))


def test_prompt_labels_cover_the_question_text_only(processor, samples):
    batch = VLMCollator(processor)(samples)
    tok = processor.tokenizer
    for row, sample in enumerate(samples):
        picked = batch["prompt_labels"][row] != IGNORE_INDEX
        assert not (picked & (batch["labels"][row] != IGNORE_INDEX)).any()  # disjoint from the answer
        text = tok.decode(batch["input_ids"][row][picked])
        assert sample.question in text and "<image>" not in text and "<s>" not in text
        assert sample.answer not in text
    assert len(set(batch["sample_keys"])) == 3  # content keys differ per sample
    assert VLMCollator(processor)(samples[:1])["sample_keys"][0] == batch["sample_keys"][0]  # and are stable


# --- preference pairs: the alternate view ----------------------------------------------------------


def _with_alternates(samples):
    return [dataclasses.replace(s, alternate=f"i'm sorry, i cannot help with {s.id}.") for s in samples]


def test_alternate_view_has_the_same_prompts_and_images_and_labels_the_alternate(processor, samples):
    paired = _with_alternates(samples)
    batch = VLMCollator(processor)(paired)
    view = batch["alternate"]
    tok = processor.tokenizer
    assert torch.equal(view["pixel_values"], batch["pixel_values"])  # the same images, processed alike
    assert view["sample_ids"] == batch["sample_ids"] and view["image_keys"] == batch["image_keys"]
    assert set(view["sample_keys"]).isdisjoint(batch["sample_keys"])  # other content, other keys
    assert "alternate" not in view  # one level: the view of a view does not exist
    for row, sample in enumerate(paired):
        start = int((batch["labels"][row] != IGNORE_INDEX).nonzero()[0])  # where the answer starts
        assert int((view["labels"][row] != IGNORE_INDEX).nonzero()[0]) == start  # the same prompt length,
        assert torch.equal(view["input_ids"][row, :start], batch["input_ids"][row, :start])  # the same tokens
        assert torch.equal(view["prompt_labels"][row, :start], batch["prompt_labels"][row, :start])
        assert (view["prompt_labels"][row, start:] == IGNORE_INDEX).all()
        n = int(view["attention_mask"][row].sum())
        assert tok.decode(view["input_ids"][row, start:n]) == f" {sample.alternate}</s>"
        assert int((view["labels"][row] != IGNORE_INDEX).sum()) == n - start  # the alternate, nothing else
    # The view is not a model input of the batch, nor are the image keys.
    assert not {"alternate", "image_keys", "sample_keys"} & set(MethodModule.model_inputs(batch))
    # Without alternates there is no view; generation batches never carry one.
    assert "alternate" not in VLMCollator(processor)(samples)
    assert "alternate" not in VLMCollator(processor, train=False)(paired)


def test_a_batch_with_only_some_alternates_names_the_sample_without(processor, samples):
    paired = [*_with_alternates(samples[:2]), samples[2]]
    paired[2].meta = {"source": "forget.json", "index": 9}
    with pytest.raises(
        DataError,
        match=r"forget\.json: record 9 \(id 'c'\): field 'alternate': no alternate answer, while sample 'a'",
    ):
        VLMCollator(processor)(paired)


def test_image_keys_hash_the_pixels_not_the_path(processor, samples, tmp_path):
    Image.new("RGB", (32, 32), (200, 10, 10)).save(tmp_path / "red_copy.png")
    Image.new("RGB", (32, 32), (200, 10, 11)).save(tmp_path / "almost_red.png")
    copy = dataclasses.replace(samples[0], image=tmp_path / "red_copy.png")
    other = dataclasses.replace(samples[0], image=tmp_path / "almost_red.png")
    keys = VLMCollator(processor)([samples[0], copy, other, samples[2]])["image_keys"]
    assert keys[0] == keys[1] and keys[2] != keys[0] and keys[3] is None
