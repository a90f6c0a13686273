"""Load any Hugging Face image-text-to-text model and its processor, by hub name or local path."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from mirage.models.families import family_for_model_type, processor_class

log = logging.getLogger(__name__)

# How many missing tensor names an error lists (a checkpoint of the wrong model misses hundreds).
_NAMES_SHOWN = 5

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


class WeightsError(ValueError):
    """A weight file that is empty, truncated or not safetensors, or a checkpoint that lacks tensors."""


def check_safetensors_file(path: str | Path) -> list[str]:
    """The tensor names in ``path``; a zero-byte, truncated or non-safetensors file is a WeightsError.

    ``safe_open`` reads only the header and checks that the tensors it lists cover the data
    section exactly, so a file cut short (or with bytes appended) fails here without loading it.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise WeightsError(
            f"{path}: empty weight file (0 bytes); the save or copy that wrote it was cut short"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    except SafetensorError as err:
        if "not fully covered" in str(err):
            what = "truncated (or padded): the tensor data its header lists does not match the file's size"
        else:
            what = "not a safetensors file"
        raise WeightsError(f"{path}: {what} ({size} bytes on disk; safetensors: {err})") from err


def check_weight_dir(path: Path) -> Path | None:
    """Check each ``*.safetensors`` file of a local checkpoint and its shard index; returns the weights' file.

    A sharded checkpoint's ``model.safetensors.index.json`` must name only shards that exist and
    that hold the tensors it maps to them. The return value (the index, ``model.safetensors``, or
    ``None``) is what an error about missing tensors names.
    """
    names = {file.name: check_safetensors_file(file) for file in sorted(path.glob("*.safetensors"))}
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, TypeError) as err:
            raise WeightsError(f"{index}: not a safetensors shard index with a 'weight_map' ({err})") from err
        for shard in sorted(set(weight_map.values())):
            if shard not in names:
                raise WeightsError(f"{index}: names the shard {shard!r}, which is not in {path}")
        held = {shard: set(tensors) for shard, tensors in names.items()}
        absent = [name for name, shard in weight_map.items() if name not in held[shard]]
        if absent:
            raise WeightsError(
                f"{index}: {len(absent)} tensors are not in the shard it names, e.g. "
                f"{absent[0]!r} in {weight_map[absent[0]]!r}"
            )
        return index
    if "model.safetensors" in names:
        return path / "model.safetensors"
    return None


def _check_missing_tensors(info: dict[str, Any], source: str, model: torch.nn.Module) -> None:
    """Tensors the architecture needs but the checkpoint lacks are an error, not a random initialization.

    transformers reports them in ``missing_keys``; tied weights (``lm_head`` under
    ``tie_word_embeddings``) and buffers are not in it, so a complete checkpoint passes. A shape
    mismatch already raises inside transformers; unused tensors are only in its load report.
    """
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        raise WeightsError(
            f"{source}: missing {len(missing)} of the tensors {type(model).__name__} needs, e.g. "
            f"{missing[:_NAMES_SHOWN]}; transformers would initialize them randomly (a partial or "
            "mismatched checkpoint?)"
        )


def _load_adapter_dir(path: Path, **kwargs: Any) -> tuple[torch.nn.Module, Any]:
    """A LoRA export (mirage's ``hf/`` of a LoRA run): its base model plus the adapter, and its processor."""
    from peft import PeftModel, get_peft_model_state_dict

    adapter_file = path / "adapter_model.safetensors"
    if not adapter_file.is_file():
        raise WeightsError(f"{adapter_file}: not found; a LoRA export keeps its adapter weights there")
    check_weight_dir(path)  # before loading the base model: a bad adapter file fails in seconds
    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{path / 'adapter_config.json'}: no base_model_name_or_path to load the adapter on")
    model, processor = load_vlm(base, **kwargs)
    model = PeftModel.from_pretrained(model, str(path))
    # peft only warns about adapter tensors the file lacks (and leaves them at their initial values).
    # What peft saves for this adapter config is what the file must hold; none of mirage's families
    # remaps checkpoint keys (no _checkpoint_conversion_mapping), so the names compare directly.
    held = set(check_safetensors_file(adapter_file))
    missing = [
        name for name in get_peft_model_state_dict(model, save_embedding_layers=False) if name not in held
    ]
    if missing:
        raise WeightsError(
            f"{adapter_file}: missing {len(missing)} of the adapter tensors its adapter_config.json implies, "
            f"e.g. {missing[:_NAMES_SHOWN]}"
        )
    if (path / "preprocessor_config.json").is_file() or (path / "processor_config.json").is_file():
        processor = load_processor(path, trust_remote_code=kwargs.get("trust_remote_code", False))
    log.info("loaded LoRA adapter %s on %s", path, base)
    return model, processor


def _saved_processor_class(name_or_path: str, revision: str | None) -> str | None:
    """The ``processor_class`` a checkpoint's processor files name (local folder or hub cache), if any."""
    from transformers.utils import cached_file

    for file_name in ("processor_config.json", "tokenizer_config.json"):
        path = cached_file(
            name_or_path,
            file_name,
            revision=revision,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if path is not None:
            try:
                name = json.loads(Path(path).read_text(encoding="utf-8")).get("processor_class")
            except (ValueError, AttributeError) as err:
                raise ValueError(f"{path}: not a JSON object ({err})") from err
            if name:
                return name
    return None


def load_processor(name_or_path: str | Path, *, trust_remote_code: bool = False, revision: str | None = None):
    """The checkpoint's processor: the class a family config names for its ``processor_class``
    (``processor_classes``, e.g. the torchvision-free Qwen2-VL processor of the tiny builds), else
    whatever ``AutoProcessor`` builds."""
    name = str(name_or_path)
    saved_class = _saved_processor_class(name, revision)
    family_class = processor_class(saved_class) if saved_class else None
    loader = family_class or AutoProcessor
    processor = loader.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
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
    the checkpoint has them (transformers' default). A local checkpoint's weight files are checked
    first, and tensors the checkpoint lacks are a :class:`WeightsError` rather than random weights.
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
    weights_source = name
    if Path(name).is_dir():  # a local checkpoint: bad weight files fail here, named, before loading
        weights_source = str(check_weight_dir(Path(name)) or name)
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
    model, loading_info = AutoModelForImageTextToText.from_pretrained(
        name, output_loading_info=True, **kwargs
    )
    _check_missing_tensors(loading_info, weights_source, model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    processor = load_processor(name, trust_remote_code=trust_remote_code, revision=revision)
    log.info("loaded %s (%s family, %s)", name, family.name, type(model).__name__)
    return model, processor
