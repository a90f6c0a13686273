"""Tiny offline builders for the non-LLaVA families: Qwen2-VL / Qwen2.5-VL, Gemma 3 and Idefics3.

Each builder mirrors ``tiny._build_llava``: a locally trained tokenizer carrying the
family's own special tokens, a config shrunk to a few hundred thousand parameters, the
family's PIL image processor (the torchvision-backed ones are unavailable) and a chat
template in the family's style. The result is written with ``save_pretrained`` so it loads
through ``AutoModelForImageTextToText`` / ``AutoProcessor`` like a hub checkpoint.

Images are kept tiny (``spec.image_size``, 32 by default) so each image costs 4 tokens.
Importing this module registers the builders with ``mirage.models.tiny``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoProcessor, PreTrainedConfig, PreTrainedTokenizerFast, Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from mirage.models.tiny import (
    TinyVLMSpec,
    register_tiny_builder,
    set_generation_ids,
    train_tokenizer,
    vision_dims,
)

# --- chat templates -------------------------------------------------------------------------
# All accept ``content`` as a string or as a list of {"type": "image"} / {"type": "text"} parts.

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

# Gemma 3 has no system role: the system text is folded into the first user turn, and the
# assistant speaks as "model". The tokenizer adds <bos>, so the template does not.
GEMMA3_CHAT_TEMPLATE = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] %}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{% if loop.first and system %}{{ system }}\n\n{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<start_of_image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_turn>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# Idefics3 / SmolVLM style: "User:<image>text<end_of_utterance>\nAssistant: ...".
IDEFICS3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{{ ':' if message['content'] and message['content'][0]['type'] == 'image' else ': ' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def _head_dim(spec: TinyVLMSpec) -> int:
    if spec.hidden % spec.heads:
        raise ValueError(f"hidden={spec.hidden} is not a multiple of heads={spec.heads}")
    return spec.hidden // spec.heads


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) like Qwen's [16, 24, 24]."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


# --- Qwen2-VL / Qwen2.5-VL ------------------------------------------------------------------
_QWEN_SPECIALS = [
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
_QWEN_CORPUS = ["system user assistant <|im_start|>user\n<|im_end|>\n<|im_start|>assistant\n"]


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor without the video processor.

    In transformers 5 every Qwen2-VL / Qwen2.5-VL processor requires a video processor, and
    those need torchvision (absent here): neither constructing nor ``AutoProcessor``-loading the
    stock class works without it. Images go through the inherited, unchanged code path.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        # Skip Qwen2VLProcessor.__init__, which would insist on a video processor.
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)


class _ImageOnlyProcessorKey(PreTrainedConfig):
    """Registration key only: AutoProcessor finds a saved ``processor_class`` by name among the
    processors registered under some config; a private key keeps the real Qwen configs untouched."""

    model_type = "mirage_qwen2_vl_image_only"


AutoProcessor.register(_ImageOnlyProcessorKey, Qwen2VLImageOnlyProcessor)


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
            "mrope_section": _mrope_section(_head_dim(spec)),
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


# --- Gemma 3 --------------------------------------------------------------------------------
_GEMMA3_CORPUS = ["user model <start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n"]


def build_tiny_gemma3(spec: TinyVLMSpec, out_dir: Path) -> None:
    """Gemma 3: SigLIP tower, avg-pool + RMSNorm + linear projector, Gemma 3 LM (tied embeddings)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor
    from transformers.models.gemma3 import Gemma3ImageProcessorPil

    tokenizer = train_tokenizer(
        spec,
        special_tokens=[
            "<start_of_turn>",
            "<end_of_turn>",
            "<start_of_image>",
            "<end_of_image>",
            "<image_soft_token>",
        ],
        pad="<pad>",
        bos="<bos>",
        eos="<eos>",
        unk="<unk>",
        # Gemma3Processor reads these three off the tokenizer.
        named_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
        corpus=_GEMMA3_CORPUS,
    )
    patches_per_side = spec.image_size // spec.patch_size
    if patches_per_side % 2:
        raise ValueError(f"gemma3 tiny builder needs an even patch grid, got {patches_per_side}")
    # The projector average-pools the patch grid by 2 on each side: (grid/2)**2 tokens per image.
    tokens_per_image = (patches_per_side // 2) ** 2
    head_dim = _head_dim(spec)
    config = Gemma3Config(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=spec.vision_hidden,
            intermediate_size=spec.vision_hidden * 2,
            num_hidden_layers=spec.vision_layers,
            num_attention_heads=spec.vision_heads,
            image_size=spec.image_size,
            patch_size=spec.patch_size,
            vision_use_head=False,
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            head_dim=head_dim,
            query_pre_attn_scalar=head_dim,
            max_position_embeddings=spec.max_positions,
            sliding_window=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=tokenizer.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tokenizer.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image_soft_token>"),
    )
    torch.manual_seed(spec.seed)
    model = Gemma3ForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    image_processor = Gemma3ImageProcessorPil(
        size={"height": spec.image_size, "width": spec.image_size}, do_pan_and_scan=False
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_length=tokens_per_image,
        chat_template=GEMMA3_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


# --- Idefics3 -------------------------------------------------------------------------------
_IDEFICS3_CORPUS = ["System: User: Assistant: User:<image> Assistant: <end_of_utterance>\n"]


def build_tiny_idefics3(spec: TinyVLMSpec, out_dir: Path) -> None:
    """Idefics3: SigLIP-like tower, pixel-shuffle + linear connector, Llama LM; no image splitting."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3 import Idefics3ImageProcessorPil

    scale_factor = 2
    tokenizer = train_tokenizer(
        spec,
        special_tokens=["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>"],
        pad="<pad>",
        bos="<|begin_of_text|>",
        eos="<end_of_utterance>",
        unk="<unk>",
        named_tokens={"image_token": "<image>"},
        corpus=_IDEFICS3_CORPUS,
    )
    patches_per_side = spec.image_size // spec.patch_size
    if patches_per_side % scale_factor:
        raise ValueError(f"idefics3 tiny builder needs a patch grid divisible by {scale_factor}")
    image_seq_len = (patches_per_side // scale_factor) ** 2
    config = Idefics3Config(
        vision_config=vision_dims(spec),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            max_position_embeddings=spec.max_positions,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale_factor,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    model = Idefics3ForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    # Splitting off: every image is resized to one image_size square, hence one global tile only.
    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=False,
        size={"longest_edge": spec.image_size},
        max_image_size={"longest_edge": spec.image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=IDEFICS3_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


register_tiny_builder("qwen2_vl", build_tiny_qwen2_vl)
register_tiny_builder("qwen2_5_vl", build_tiny_qwen2_5_vl)
register_tiny_builder("gemma3", build_tiny_gemma3)
register_tiny_builder("idefics3", build_tiny_idefics3)
