"""Tiny Idefics3 / SmolVLM (configs/family/idefics3.yaml): SigLIP-like tower, pixel-shuffle connector,
Llama language model; no image splitting."""

from __future__ import annotations

from pathlib import Path

import torch

from mirage.models.tiny.spec import TinyVLMSpec, set_generation_ids, train_tokenizer, vision_dims

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
