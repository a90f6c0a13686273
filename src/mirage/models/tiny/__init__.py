"""Tiny VLMs built offline: random weights, a locally trained tokenizer, a real processor.

They are saved with ``save_pretrained`` and loaded back through the same ``from_pretrained`` path as
a 7B checkpoint, so CPU tests exercise the real loading code. Which function builds a family's tiny
model is named in its config, ``configs/family/<name>.yaml`` (``tiny_builders``); this package holds
the spec and cache (``spec``, ``build``) and one builder module per family.
"""

from mirage.models.tiny.build import build_tiny_vlm, cli, load_tiny_vlm
from mirage.models.tiny.spec import (
    LLAVA_CHAT_TEMPLATE,
    PRESETS,
    TinyVLMSpec,
    set_generation_ids,
    train_tokenizer,
    vision_dims,
)

__all__ = [
    "LLAVA_CHAT_TEMPLATE",
    "PRESETS",
    "TinyVLMSpec",
    "build_tiny_vlm",
    "cli",
    "load_tiny_vlm",
    "set_generation_ids",
    "train_tokenizer",
    "vision_dims",
]
