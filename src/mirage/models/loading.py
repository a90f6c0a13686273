"""Load any Hugging Face image-text-to-text model and its processor, by hub name or local path."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from mirage.models.families import family_for_model_type

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


@dataclass
class QuantizationSpec:
    """bitsandbytes settings for QLoRA: 4-bit NF4 (or FP4) or 8-bit LLM.int8."""

    bits: int = 4
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "float32"
    # Keep the vision tower and projector in full precision (bitsandbytes quantizes them otherwise).
    skip_vision_and_projector: bool = True

    def to_bnb(self, skip_modules: list[str]) -> BitsAndBytesConfig:
        if self.bits == 4:
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type=self.quant_type,
                bnb_4bit_use_double_quant=self.double_quant,
                bnb_4bit_compute_dtype=resolve_dtype(self.compute_dtype),
                llm_int8_skip_modules=skip_modules or None,
            )
        if self.bits == 8:
            return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip_modules or None)
        raise ValueError(f"quantization.bits must be 4 or 8, got {self.bits}")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def _load_adapter_dir(path: Path, **kwargs: Any) -> tuple[torch.nn.Module, Any]:
    """A LoRA export (mirage's ``hf/`` of a LoRA run): its base model plus the adapter, and its processor."""
    import json

    from peft import PeftModel

    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path / 'adapter_config.json'}: no base_model_name_or_path to load the adapter on")
    model, processor = load_vlm(base, **kwargs)
    model = PeftModel.from_pretrained(model, str(path))
    if (path / "preprocessor_config.json").is_file() or (path / "processor_config.json").is_file():
        processor = load_processor(path, trust_remote_code=kwargs.get("trust_remote_code", False))
    log.info("loaded LoRA adapter %s on %s", path, base)
    return model, processor


def load_processor(name_or_path: str | Path, *, trust_remote_code: bool = False, revision: str | None = None):
    import mirage.models.tiny_builders  # noqa: F401  (registers the torchvision-free Qwen2-VL processor)

    processor = AutoProcessor.from_pretrained(
        str(name_or_path), trust_remote_code=trust_remote_code, revision=revision
    )
    if getattr(processor, "image_processor", None) is None:
        raise ValueError(
            f"{name_or_path}: AutoProcessor returned {type(processor).__name__}, not a multimodal processor "
            "(missing preprocessor_config.json, or a processor class this transformers cannot build)"
        )
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(
            f"processor at {name_or_path} has no chat template; mirage formats every prompt with it"
        )
    return processor


def load_vlm(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = "float32",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    quantization: QuantizationSpec | dict[str, Any] | None = None,
    device_map: str | dict | None = None,
    gradient_checkpointing: bool = False,
) -> tuple[torch.nn.Module, Any]:
    """Load ``(model, processor)`` through ``AutoModelForImageTextToText`` / ``AutoProcessor``.

    ``trust_remote_code`` stays off unless asked for; weights load from safetensors where
    the checkpoint has them (transformers' default).
    """
    name = str(name_or_path)
    adapter_config = Path(name) / "adapter_config.json"
    if adapter_config.is_file():
        return _load_adapter_dir(
            Path(name),
            dtype=dtype,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            quantization=quantization,
            device_map=device_map,
        )
    config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    family = family_for_model_type(config.model_type)  # fails early, with the known families listed
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "revision": revision}
    if dtype is not None:
        kwargs["dtype"] = resolve_dtype(dtype)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization is not None:
        spec = (
            quantization if isinstance(quantization, QuantizationSpec) else QuantizationSpec(**quantization)
        )
        skip = family.quantization_skip() if spec.skip_vision_and_projector else ["lm_head"]
        kwargs["quantization_config"] = spec.to_bnb(skip)
        log.info("loading %s quantized to %d bits (kept in full precision: %s)", name, spec.bits, skip)
    model = AutoModelForImageTextToText.from_pretrained(name, **kwargs)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    processor = load_processor(name, trust_remote_code=trust_remote_code, revision=revision)
    log.info("loaded %s (%s family, %s)", name, family.name, type(model).__name__)
    return model, processor
