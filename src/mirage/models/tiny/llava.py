"""The tiny LLaVA (configs/family/llava.yaml): CLIP vision tower, two-layer MLP projector, Llama LM."""

from __future__ import annotations

from pathlib import Path

import torch

from mirage.models.tiny.spec import (
    IMAGE,
    LLAVA_CHAT_TEMPLATE,
    TinyVLMSpec,
    set_generation_ids,
    train_tokenizer,
    vision_dims,
)


def build_tiny_llava(spec: TinyVLMSpec, out_dir: Path) -> None:
    """LLaVA-1.5 in miniature; the image becomes (image_size / patch_size)**2 tokens (16 by default)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = train_tokenizer(spec)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE)
    num_patches = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision_dims(spec)),
        text_config=LlamaConfig(
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            vocab_size=len(tokenizer),
            max_position_embeddings=spec.max_positions,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=image_token_id,
        image_seq_length=num_patches,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy="default",  # drops CLS, hence num_additional_image_tokens=1 below
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
