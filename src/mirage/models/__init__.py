"""Loading, component maps, fine-tuning modes and tiny offline builds of Hugging Face VLMs."""

from mirage.models.families import FamilySpec, decoder_layers, family_of, register_family
from mirage.models.finetune import FinetuneSpec, LoraSpec, apply_finetune, count_parameters
from mirage.models.loading import QuantizationSpec, load_vlm

__all__ = [
    "FamilySpec",
    "FinetuneSpec",
    "LoraSpec",
    "QuantizationSpec",
    "apply_finetune",
    "count_parameters",
    "decoder_layers",
    "family_of",
    "load_vlm",
    "register_family",
]
