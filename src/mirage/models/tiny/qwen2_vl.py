"""Tiny Qwen2-VL and Qwen2.5-VL (configs/family/qwen2_vl.yaml).

A ViT with 2D rotary embeddings and a 2x2 patch merger feeding a Qwen2 language model with M-RoPE; the
processor is mirage's image-only Qwen2-VL processor (the stock one needs torchvision). Images are kept
tiny (``spec.image_size``, 32 by default) so each image costs 4 tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from mirage.models.processors import Qwen2VLImageOnlyProcessor
from mirage.models.tiny.spec import TinyVLMSpec, head_dim, set_generation_ids, train_tokenizer

# ChatML as Qwen2-VL writes it; an image part becomes the vision_start/image_pad/vision_end triple
# that Qwen2VLProcessor expands to one <|image_pad|> per merged patch.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _mrope_section(head_size: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) like Qwen's [16, 24, 24]."""
    half = head_size // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


_QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_CORPUS = ["system user assistant <|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"]


def _qwen_tokenizer(spec: TinyVLMSpec) -> PreTrainedTokenizerFast:
    return train_tokenizer(
        spec,
        special_tokens=_QWEN_SPECIALS,
        pad="<|endoftext|>",
        eos="<|im_end|>",
        unk="<unk>",
        named_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        corpus=_QWEN_CORPUS,
    )


def _qwen_image_processor(spec: TinyVLMSpec) -> Any:
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    # min = max pixels = image_size**2, so a square image becomes image_size x image_size, i.e.
    # (image_size/patch)**2 patches merged 2x2: 4 tokens at the default 32 / 8.
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": spec.image_size**2, "longest_edge": spec.image_size**2},
        patch_size=spec.patch_size,
        temporal_patch_size=2,
        merge_size=2,
    )


def _qwen_text_kwargs(spec: TinyVLMSpec, tokenizer: Any) -> dict[str, Any]:
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": _mrope_section(head_dim(spec)),
        },
        bos_token_id=tokenizer.pad_token_id,  # Qwen's bos is <|endoftext|>, never actually prepended
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _qwen_token_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _save_qwen(spec: TinyVLMSpec, out_dir: Path, model: torch.nn.Module, tokenizer: Any) -> None:
    set_generation_ids(model, tokenizer, bos_id=tokenizer.pad_token_id)
    processor = Qwen2VLImageOnlyProcessor(
        image_processor=_qwen_image_processor(spec),
        tokenizer=tokenizer,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


def build_tiny_qwen2_vl(spec: TinyVLMSpec, out_dir: Path) -> None:
    """Qwen2-VL: ViT with 2D rotary embeddings, 2x2 patch merger, Qwen2 LM with M-RoPE."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tokenizer = _qwen_tokenizer(spec)
    config = Qwen2VLConfig(
        vision_config=dict(
            depth=spec.vision_layers,
            embed_dim=spec.vision_hidden,
            hidden_size=spec.hidden,  # the merger's output width = LM width
            mlp_ratio=2,
            num_heads=spec.vision_heads,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        text_config=_qwen_text_kwargs(spec, tokenizer),
        **_qwen_token_ids(tokenizer),
    )
    torch.manual_seed(spec.seed)
    model = Qwen2VLForConditionalGeneration(config)
    _save_qwen(spec, out_dir, model, tokenizer)


def build_tiny_qwen2_5_vl(spec: TinyVLMSpec, out_dir: Path) -> None:
    """Qwen2.5-VL: as Qwen2-VL with a SwiGLU, RMSNorm, window-attention ViT."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = _qwen_tokenizer(spec)
    config = Qwen2_5_VLConfig(
        vision_config=dict(
            depth=spec.vision_layers,
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_hidden * 2,
            out_hidden_size=spec.hidden,
            num_heads=spec.vision_heads,
            patch_size=spec.patch_size,
            spatial_merge_size=2,
            temporal_patch_size=2,
            # One window spans the whole tiny image; the last block uses full attention as in the real model.
            window_size=spec.image_size,
            fullatt_block_indexes=[spec.vision_layers - 1],
        ),
        text_config=_qwen_text_kwargs(spec, tokenizer),
        **_qwen_token_ids(tokenizer),
    )
    torch.manual_seed(spec.seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    _save_qwen(spec, out_dir, model, tokenizer)
