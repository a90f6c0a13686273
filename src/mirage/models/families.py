"""Where each VLM family keeps its parts.

A family maps a Hugging Face ``config.model_type`` to the module paths of its vision
tower, projector, language model and decoder layers. Everything that freezes, targets
LoRA, quantizes or hooks a layer asks this map instead of guessing from leaf names
(``q_proj`` exists in CLIP too). A new family is one more ``register_family`` call.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

COMPONENTS = ("vision_tower", "projector", "language_model")


@dataclass(frozen=True)
class FamilySpec:
    """Module-name prefixes of one architecture (names as in ``model.named_modules()``)."""

    name: str
    model_types: tuple[str, ...]
    vision_tower: tuple[str, ...]
    projector: tuple[str, ...]
    language_model: tuple[str, ...]
    # Path of the ModuleList of decoder layers (RMU hooks and steering go here).
    decoder_layers: str

    def quantization_skip(self) -> list[str]:
        """Full module names bitsandbytes must leave in full precision: the vision side and the head.
        (transformers matches skip names from the start of the full name, or as a suffix.)"""
        return [*self.vision_tower, *self.projector, "lm_head"]

    def prefixes(self, component: str) -> tuple[str, ...]:
        if component not in COMPONENTS:
            raise KeyError(f"unknown component {component!r}; expected one of {COMPONENTS}")
        return getattr(self, component)

    def component_of(self, name: str) -> str | None:
        """The component a parameter or module belongs to; the longest matching prefix wins,
        so a projector nested inside the vision module (Qwen2-VL's merger) counts as projector."""
        best, best_len = None, -1
        for component in COMPONENTS:
            for prefix in self.prefixes(component):
                if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                    best, best_len = component, len(prefix)
        return best


_FAMILIES: dict[str, FamilySpec] = {}


def register_family(spec: FamilySpec) -> FamilySpec:
    for model_type in spec.model_types:
        _FAMILIES[model_type] = spec
    return spec


def known_model_types() -> list[str]:
    return sorted(_FAMILIES)


def family_for_model_type(model_type: str) -> FamilySpec:
    try:
        return _FAMILIES[model_type]
    except KeyError:
        raise KeyError(
            f"model_type {model_type!r} has no mirage family; known: {', '.join(known_model_types())}. "
            "Register one with mirage.models.families.register_family."
        ) from None


def family_of(model: nn.Module) -> FamilySpec:
    """The family of a (possibly peft-wrapped) Hugging Face model."""
    base = unwrap_peft(model)
    return family_for_model_type(base.config.model_type)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    return unwrap_peft(model).get_submodule(path)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The language model's decoder layers, for any registered family."""
    layers = get_submodule(model, family_of(model).decoder_layers)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{family_of(model).decoder_layers} is {type(layers).__name__}, not a ModuleList")
    return layers


# --- the families mirage knows ------------------------------------------------------------
# Paths are those of transformers 5.x, where every *ForConditionalGeneration holds a
# ``model`` (vision + projector + text backbone) and a top-level ``lm_head``.
LLAVA = register_family(
    FamilySpec(
        name="llava",
        model_types=("llava",),
        vision_tower=("model.vision_tower",),
        projector=("model.multi_modal_projector",),
        language_model=("model.language_model", "lm_head"),
        decoder_layers="model.language_model.layers",
    )
)
QWEN2_VL = register_family(
    FamilySpec(
        name="qwen2_vl",
        model_types=("qwen2_vl", "qwen2_5_vl"),
        vision_tower=("model.visual",),
        projector=("model.visual.merger",),
        language_model=("model.language_model", "lm_head"),
        decoder_layers="model.language_model.layers",
    )
)
GEMMA3 = register_family(
    FamilySpec(
        name="gemma3",
        model_types=("gemma3",),
        vision_tower=("model.vision_tower",),
        projector=("model.multi_modal_projector",),
        language_model=("model.language_model", "lm_head"),
        decoder_layers="model.language_model.layers",
    )
)
IDEFICS3 = register_family(
    FamilySpec(
        name="idefics3",
        model_types=("idefics3", "smolvlm"),
        vision_tower=("model.vision_model",),
        projector=("model.connector",),
        language_model=("model.text_model", "lm_head"),
        decoder_layers="model.text_model.layers",
    )
)
