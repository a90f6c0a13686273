"""Vision pre-training: only the tower learns, it learns to see, and bad labels are named."""

from __future__ import annotations

import functools

import pytest
import torch

from mirage.data.collate import VLMCollator
from mirage.data.readers import read_conversations
from mirage.data.synthetic import OBJECTS, QUADRANTS
from mirage.methods.vision_pretrain import VisionPretrain
from mirage.models.finetune import FinetuneSpec, apply_finetune

TARGETS = {"object": [o[0] for o in OBJECTS], "quadrant": QUADRANTS}


def _method(model, processor, lr=3e-3):
    spec = FinetuneSpec(train={"vision_tower": True, "projector": False, "language_model": False})
    return VisionPretrain(
        apply_finetune(model, spec),
        optimizer=functools.partial(torch.optim.AdamW, lr=lr),
        processor=processor,
        targets=TARGETS,
    )


def test_vision_pretraining_learns_object_and_quadrant_and_touches_only_the_tower(
    tiny_llava, processor, synthetic_dir
):
    model, _ = tiny_llava
    method = _method(model, processor)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    samples = read_conversations(synthetic_dir / "base.json")
    batch = {"base": VLMCollator(processor)(samples[:64])}
    # The heads read every patch token: 16 patches x vision width 32.
    assert method.heads["object"].in_features == 16 * 32
    optimizer = method.configure_optimizers()
    first = method.compute_loss(batch)
    for _ in range(60):
        terms = method.compute_loss(batch)
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
    assert first["object_acc"] < 0.5 and first["loss"] > 2.5  # chance: ln 8 + ln 4 = 3.5
    assert terms["object_acc"] == 1.0 and terms["quadrant_acc"] == 1.0
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith("model.vision_tower.") for n in changed)
    # The heads are the method's, not the model's: the HF export is the plain VLM.
    assert not any("heads" in n for n in model.state_dict())


def test_an_unknown_label_names_the_record(tiny_llava, processor, synthetic_dir):
    model, _ = tiny_llava
    method = _method(model, processor)
    samples = read_conversations(synthetic_dir / "base.json")[:2]
    samples[1].meta["truth"] = {**samples[1].meta["truth"], "object": "teapot"}
    batch = VLMCollator(processor)(samples)
    with pytest.raises(ValueError, match=r"record 1 \(id 'base_00001'\) field truth.object = 'teapot'"):
        method.labels(batch)
