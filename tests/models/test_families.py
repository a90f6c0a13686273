"""Every supported family, built tiny and offline, through the real load / LoRA / QLoRA paths,
plus the component map and LoRA arithmetic of the real LLaVA-1.5-7B architecture (meta device)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from mirage.models.families import COMPONENTS, decoder_layers, family_of, unwrap_peft
from mirage.models.finetune import (
    FinetuneSpec,
    apply_finetune,
    count_parameters,
    lora_target_modules,
)
from mirage.models.loading import load_vlm
from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm

FAMILIES = ["llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3"]
LORA_R = 4
PEFT_PREFIX = "base_model.model."


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("tiny_models")
    return {family: build_tiny_vlm(TinyVLMSpec(family=family), cache) for family in FAMILIES}


def _mixed_batch(processor) -> dict[str, torch.Tensor]:
    """One sample with an image (and a system turn), one text-only sample with an answer.

    Images go in per sample (``[[img], []]``): the one layout every family's processor accepts;
    Gemma3Processor reads a flat list as all images belonging to the first prompt.
    """
    image = Image.new("RGB", (40, 30), (220, 30, 30))  # not square, not image_size: processors resize
    with_image = [
        {"role": "system", "content": "be safe."},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": "what is shown in the image?"},
            ],
        },
    ]
    text_only = [
        {"role": "user", "content": "describe the image."},
        {"role": "assistant", "content": [{"type": "text", "text": "i am sorry, i cannot help."}]},
    ]
    texts = [
        processor.apply_chat_template(with_image, tokenize=False, add_generation_prompt=True),
        processor.apply_chat_template(text_only, tokenize=False, add_generation_prompt=False),
    ]
    return processor(
        text=texts, images=[[image], []], return_tensors="pt", padding=True, padding_side="right"
    )


def _text_dims(model: nn.Module) -> tuple[int, int, int, int, int]:
    """(layers, hidden, q_out, kv_out, vocab) of the language model, from its config only."""
    text = unwrap_peft(model).config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return (
        text.num_hidden_layers,
        text.hidden_size,
        text.num_attention_heads * head_dim,
        text.num_key_value_heads * head_dim,
        text.vocab_size,
    )


def _component_numel(model: nn.Module) -> Counter:
    spec = family_of(model)
    counts: Counter = Counter()
    for name, param in unwrap_peft(model).named_parameters():
        counts[spec.component_of(name)] += param.numel()
    return counts


def _lora_hosts(peft_model: nn.Module) -> list[str]:
    """Base-model names of the layers peft wrapped (one per ``lora_A`` container)."""
    return [
        name.removeprefix(PEFT_PREFIX).removesuffix(".lora_A")
        for name, _ in peft_model.named_modules()
        if name.endswith(".lora_A")
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_runs_and_generates(tiny_paths: dict[str, Path], family: str) -> None:
    model, processor = load_vlm(tiny_paths[family])
    assert family_of(model).name == ("qwen2_vl" if family == "qwen2_5_vl" else family)
    # A bare tokenizer also carries a chat template; make sure the full processor came back.
    assert hasattr(processor, "image_processor"), type(processor).__name__
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    batch = _mixed_batch(processor)
    image_token_id = model.config.image_token_id
    n_image_tokens = (batch["input_ids"] == image_token_id).sum(dim=1).tolist()
    assert 0 < n_image_tokens[0] <= 16 and n_image_tokens[1] == 0, n_image_tokens
    # Right padding: the shorter sample ends in pad tokens, never starts with them.
    assert batch["attention_mask"][:, 0].all()

    with torch.no_grad():
        logits = model(**batch).logits
    *_, vocab = _text_dims(model)
    assert tuple(logits.shape) == (2, batch["input_ids"].shape[1], vocab)
    assert vocab == len(processor.tokenizer)
    assert torch.isfinite(logits).all()

    image_inputs = processor(
        text=[
            processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}],
                tokenize=False,
                add_generation_prompt=True,
            )
        ],
        images=[[Image.new("RGB", (32, 32), (0, 0, 255))]],
        return_tensors="pt",
    )
    out = model.generate(**image_inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, image_inputs["input_ids"].shape[1] + 3)
    gen = model.generation_config
    tok = processor.tokenizer
    assert (gen.pad_token_id, gen.eos_token_id) == (tok.pad_token_id, tok.eos_token_id)
    assert gen.bos_token_id is not None


@pytest.mark.parametrize("family", FAMILIES)
def test_every_parameter_has_one_component(tiny_paths: dict[str, Path], family: str) -> None:
    model, _ = load_vlm(tiny_paths[family])
    spec = family_of(model)
    orphans = [name for name, _ in model.named_parameters() if spec.component_of(name) is None]
    assert orphans == []
    counts = _component_numel(model)
    assert set(counts) == set(COMPONENTS)
    assert all(counts[c] > 0 for c in COMPONENTS), counts
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    # Each prefix names a real module, and the decoder stack is the spec's.
    for component in COMPONENTS:
        for prefix in spec.prefixes(component):
            model.get_submodule(prefix)
    assert len(decoder_layers(model)) == TinyVLMSpec().layers


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_stays_in_language_model(tiny_paths: dict[str, Path], family: str) -> None:
    model, _ = load_vlm(tiny_paths[family])
    peft_model = apply_finetune(
        model, FinetuneSpec(mode="lora", lora={"r": LORA_R, "target_modules": "q_proj|v_proj"})
    )
    spec = family_of(peft_model)
    hosts = _lora_hosts(peft_model)
    layers, hidden, q_out, kv_out, _ = _text_dims(peft_model)
    assert len(hosts) == 2 * layers
    assert {spec.component_of(h) for h in hosts} == {"language_model"}
    assert {h.rsplit(".", 1)[-1] for h in hosts} == {"q_proj", "v_proj"}

    # r * (in + out) per adapted layer: q_proj hidden -> heads*head_dim, v_proj hidden -> kv_heads*head_dim.
    expected = layers * LORA_R * ((hidden + q_out) + (hidden + kv_out))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == expected
    counts = count_parameters(peft_model)
    assert counts["trainable"] == counts["trainable/language_model"] == expected
    assert counts["trainable/vision_tower"] == counts["trainable/projector"] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_full_finetune_freezes_only_the_vision_tower(tiny_paths: dict[str, Path], family: str) -> None:
    model, _ = load_vlm(tiny_paths[family])
    model = apply_finetune(model, FinetuneSpec())
    spec = family_of(model)
    by_component: dict[str, set[bool]] = {c: set() for c in COMPONENTS}
    for name, param in model.named_parameters():
        by_component[spec.component_of(name)].add(param.requires_grad)
    assert by_component == {"vision_tower": {False}, "projector": {True}, "language_model": {True}}

    numel = _component_numel(model)
    expected = numel["projector"] + numel["language_model"]
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert count_parameters(model)["trainable"] == expected


@pytest.fixture(scope="module")
def qlora_model(tiny_paths: dict[str, Path]):
    """4-bit load + LoRA, once per family for the two QLoRA tests (neither changes the weights)."""
    pytest.importorskip("bitsandbytes")
    cache: dict[str, tuple[nn.Module, object]] = {}

    def get(family: str) -> tuple[nn.Module, object]:
        if family not in cache:
            quant = {"bits": 4}
            model, processor = load_vlm(tiny_paths[family], quantization=quant)
            spec = FinetuneSpec(
                mode="lora", lora={"r": LORA_R, "target_modules": "q_proj|v_proj"}, quantization=quant
            )
            cache[family] = apply_finetune(model, spec), processor
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_qlora_quantizes_language_model_and_trains_adapters(qlora_model, family: str) -> None:
    import bitsandbytes as bnb

    peft_model, processor = qlora_model(family)
    spec = family_of(peft_model)
    base = unwrap_peft(peft_model)

    hosts = _lora_hosts(peft_model)
    assert hosts and all(isinstance(base.get_submodule(h).base_layer, bnb.nn.Linear4bit) for h in hosts)
    # Every other linear layer of the decoder stack is 4-bit too (lm_head is kept in full precision).
    lm_linears = [
        (name, module)
        for name, module in base.named_modules()
        if spec.component_of(name) == "language_model"
        and isinstance(module, nn.Linear)
        and ".lora_" not in name
        and not name.startswith("lm_head")
    ]
    assert lm_linears and all(isinstance(m, bnb.nn.Linear4bit) for _, m in lm_linears)

    batch = _mixed_batch(processor)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = peft_model(**batch, labels=labels).loss
    assert torch.isfinite(loss)
    peft_model.zero_grad()
    loss.backward()
    lora_params = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    assert lora_params and all(".lora_" in n for n in lora_params)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora_params.values())
    # lora_B starts at zero, so lora_A's gradient is zero at step 0; lora_B's must not be.
    assert any(p.grad.abs().sum() > 0 for n, p in lora_params.items() if ".lora_B." in n)


@pytest.mark.parametrize("family", FAMILIES)
def test_qlora_keeps_vision_tower_in_fp32(qlora_model, family: str) -> None:
    import bitsandbytes as bnb

    # The loader passes the vision tower and projector paths as bitsandbytes skip modules.
    peft_model, _ = qlora_model(family)
    spec = family_of(peft_model)
    vision_linears = [
        m
        for name, m in unwrap_peft(peft_model).named_modules()
        if spec.component_of(name) in ("vision_tower", "projector") and isinstance(m, nn.Linear)
    ]
    assert vision_linears
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in vision_linears)
    assert all(m.weight.dtype == torch.float32 for m in vision_linears)


# --- the real LLaVA-1.5-7B architecture, without weights ------------------------------------

# CLIP ViT-L/14 at 336 px and Llama-2-7B, as in llava-hf/llava-1.5-7b-hf.
V_HIDDEN, V_LAYERS, V_HEADS, V_INTER, V_IMAGE, V_PATCH = 1024, 24, 16, 4096, 336, 14
T_HIDDEN, T_LAYERS, T_HEADS, T_INTER, T_VOCAB = 4096, 32, 32, 11008, 32064


@pytest.fixture
def llava_7b_meta() -> nn.Module:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=V_HIDDEN,
            num_hidden_layers=V_LAYERS,
            num_attention_heads=V_HEADS,
            intermediate_size=V_INTER,
            image_size=V_IMAGE,
            patch_size=V_PATCH,
            projection_dim=768,
        ),
        text_config=LlamaConfig(
            hidden_size=T_HIDDEN,
            num_hidden_layers=T_LAYERS,
            num_attention_heads=T_HEADS,
            num_key_value_heads=T_HEADS,
            intermediate_size=T_INTER,
            vocab_size=T_VOCAB,
        ),
        image_token_index=32000,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    with torch.device("meta"):
        return LlavaForConditionalGeneration(config)


def _linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def test_llava_7b_component_sizes(llava_7b_meta: nn.Module) -> None:
    model = llava_7b_meta
    names = [name for name, _ in model.named_parameters()]
    vision_names = [n for n in names if n.startswith("model.vision_tower.")]

    # CLIP vision transformer: embeddings (class token, bias-free patch conv, positions incl. CLS),
    # pre-LN, per layer q/k/v/out projections, two LayerNorms, fc1/fc2; post-LN and a projection
    # head only where the module has them (transformers 5's tower has post-LN, no projection).
    n_positions = (V_IMAGE // V_PATCH) ** 2 + 1
    layernorm = 2 * V_HIDDEN
    attention = 4 * _linear(V_HIDDEN, V_HIDDEN)
    mlp = _linear(V_HIDDEN, V_INTER) + _linear(V_INTER, V_HIDDEN)
    per_layer = attention + 2 * layernorm + mlp
    embeddings = V_HIDDEN + 3 * V_PATCH * V_PATCH * V_HIDDEN + n_positions * V_HIDDEN
    vision = embeddings + layernorm + V_LAYERS * per_layer
    if any("post_layernorm" in n for n in vision_names):
        vision += layernorm
    if any("visual_projection" in n for n in vision_names):
        vision += V_HIDDEN * 768
    projector = _linear(V_HIDDEN, T_HIDDEN) + _linear(T_HIDDEN, T_HIDDEN)
    # Llama: bias-free attention (32 KV heads = MHA) and SwiGLU MLP, two RMSNorms per layer, final
    # RMSNorm, untied embeddings and lm_head.
    llama_layer = 4 * T_HIDDEN * T_HIDDEN + 3 * T_HIDDEN * T_INTER + 2 * T_HIDDEN
    language = 2 * T_VOCAB * T_HIDDEN + T_LAYERS * llama_layer + T_HIDDEN

    counts = _component_numel(model)
    assert None not in counts
    assert counts["vision_tower"] == vision == 303_507_456
    assert counts["projector"] == projector == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert counts["language_model"] == language == 6_738_939_904


def test_llava_7b_lora_targets_and_count(llava_7b_meta: nn.Module) -> None:
    model = llava_7b_meta
    assert len(decoder_layers(model)) == T_LAYERS
    targets = lora_target_modules(model, "q_proj|v_proj")
    assert len(targets) == 2 * T_LAYERS
    assert all(t.startswith("model.language_model.layers.") for t in targets)
    # CLIP has q_proj / v_proj too; none of them may be picked.
    assert not any("vision_tower" in t for t in targets)

    r = 128
    # peft builds its adapters on the meta device as well, so this needs no memory.
    lora = {"r": r, "target_modules": "q_proj|v_proj"}
    peft_model = apply_finetune(model, FinetuneSpec(mode="lora", lora=lora))
    expected = T_LAYERS * 2 * r * (T_HIDDEN + T_HIDDEN)
    assert expected == 67_108_864
    assert count_parameters(peft_model)["trainable"] == expected
    assert sorted(_lora_hosts(peft_model)) == sorted(targets)
