"""Processor classes that a checkpoint can name but ``AutoProcessor`` cannot build in every environment.

A family config lists them under ``processor_classes`` (``configs/family/``); ``load_processor`` builds a
checkpoint whose ``processor_class`` is one of them with that class, and every other checkpoint with
``AutoProcessor``. Nothing is registered with transformers at import.
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin


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
