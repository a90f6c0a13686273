"""Activation sites on the tiny LLaVA, geometry of a model against itself, LoRA on the vision tower."""

from __future__ import annotations

import pytest
import torch

from mirage.analysis.activations import collect_activations, site_module, vision_layers
from mirage.analysis.geometry import activation_differences, geometry
from mirage.data.records import Sample


def _samples(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "red.png")
    return [
        Sample("a", "what are the people in the image like?", "fine.", tmp_path / "red.png"),
        Sample("b", "what are red people like?", "fine."),
        Sample("c", "describe the people in the image.", "ok.", tmp_path / "red.png"),
    ]


def test_sites_rows_and_self_geometry(tiny_llava, processor, tmp_path):
    model, _ = tiny_llava
    assert len(vision_layers(model)) == 2  # the tiny CLIP's depth
    with pytest.raises(ValueError, match="bad activation site"):
        site_module(model, "decoder.1")
    with pytest.raises(IndexError, match="has 4 layers"):
        site_module(model, "language_model.4")
    sites = ["language_model.0", "language_model.3", "vision_tower.1", "projector"]
    acts = collect_activations(model, processor, _samples(tmp_path), sites, batch_size=2)
    assert acts["language_model.3"].shape == (3, 64)  # every prompt
    assert acts["vision_tower.1"].shape == (2, 32)  # image prompts only
    assert acts["projector"].shape == (2, 64)
    per_site, per_component = geometry(activation_differences(acts, acts))
    assert all(r.components_for["0.9"] == 0 for r in [*per_site.values(), *per_component.values()])
    answers = collect_activations(
        model, processor, _samples(tmp_path), ["language_model.1"], answer_only=True
    )
    prompts = collect_activations(model, processor, _samples(tmp_path), ["language_model.1"])
    assert not torch.allclose(answers["language_model.1"], prompts["language_model.1"])


def test_lora_can_adapt_the_vision_tower(tiny_llava):
    from mirage.models.finetune import FinetuneSpec, apply_finetune, lora_target_modules

    model, _ = tiny_llava
    language_only = lora_target_modules(model, "q_proj|v_proj")
    with_vision = lora_target_modules(model, "q_proj|v_proj", include_vision=True)
    added = sorted(set(with_vision) - set(language_only))
    assert added and all(name.startswith("model.vision_tower.") for name in added)
    assert not any(name.startswith("model.vision_tower.") for name in language_only)
    peft_model = apply_finetune(model, FinetuneSpec(mode="lora", lora={"r": 2, "vision_tower": True}))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert any("vision_tower" in n and "lora_A" in n for n in trainable)
