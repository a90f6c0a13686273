"""Loading, component maps, fine-tuning modes and tiny offline builds of Hugging Face VLMs."""

from mirage.models.families import FamilySpec, add_config_dir, decoder_layers, family_of
from mirage.models.finetune import FinetuneSpec, LoraSpec, apply_finetune, count_parameters
from mirage.models.loading import QuantizationSpec, load_vlm

__all__ = [
    "FamilySpec",
    "FinetuneSpec",
    "LoraSpec",
    "QuantizationSpec",
    "add_config_dir",
    "apply_finetune",
    "count_parameters",
    "decoder_layers",
    "family_of",
    "load_vlm",
]
