"""Tiny Gemma 3 (configs/family/gemma3.yaml): SigLIP tower, avg-pool + RMSNorm +
linear projector, Gemma 3 LM."""

from __future__ import annotations

from pathlib import Path

import torch

from mirage.models.tiny.spec import TinyVLMSpec, head_dim, set_generation_ids, train_tokenizer

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
    head_size = head_dim(spec)
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
            head_dim=head_size,
            query_pre_attn_scalar=head_size,
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
