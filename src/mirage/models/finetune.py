"""Fine-tuning modes: full (by component or regex), LoRA inside the language model, QLoRA.

LoRA targets are listed by full module name, chosen among the language model's linear
layers (and optionally the projector's). A bare ``["q_proj", "v_proj"]`` would also wrap
CLIP's attention, which is the pitfall this module exists to avoid.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from mirage.models.families import COMPONENTS, family_of, unwrap_peft
from mirage.models.loading import QuantizationSpec

log = logging.getLogger(__name__)

PROJECTOR_MODES = ("frozen", "lora", "full")


@dataclass
class LoraSpec:
    """peft LoRA settings; ``target_modules`` is a regex over the *leaf* name of a linear layer."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj"
    # What happens to the projector: frozen, LoRA-adapted, or fully trained (peft modules_to_save).
    projector: str = "frozen"
    # Also adapt the vision tower's matching linear layers (the narrow fine-tuning study's geometry).
    vision_tower: bool = False
    bias: str = "none"
    use_rslora: bool = False


@dataclass
class FinetuneSpec:
    """How a loaded model is made trainable: ``mode`` ``full`` or ``lora`` (QLoRA: lora + quantization)."""

    mode: str = "full"
    # Full mode: which components receive gradients.
    train: dict[str, bool] = field(
        default_factory=lambda: {"vision_tower": False, "projector": True, "language_model": True}
    )
    # Full mode: if set, only parameters whose name matches (re.search) this regex train.
    trainable_regex: str | None = None
    lora: LoraSpec | dict[str, Any] | None = None
    quantization: QuantizationSpec | dict[str, Any] | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("full", "lora"):
            raise ValueError(f"finetune.mode must be 'full' or 'lora', got {self.mode!r}")
        unknown = set(self.train) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"finetune.train has unknown components {sorted(unknown)}; known: {COMPONENTS}")
        if isinstance(self.lora, dict):
            self.lora = LoraSpec(**self.lora)
        if isinstance(self.quantization, dict):
            self.quantization = QuantizationSpec(**self.quantization)
        if self.mode == "lora" and self.lora is None:
            self.lora = LoraSpec()
        if self.quantization is not None and self.mode != "lora":
            raise ValueError("a quantized model can only be trained with adapters: use finetune=qlora")


def lora_target_modules(
    model: nn.Module, leaf_regex: str, include_projector: bool = False, include_vision: bool = False
) -> list[str]:
    """Full names of the linear layers LoRA should wrap: language model only, plus the projector and the
    vision tower's leaf-matching layers if asked."""
    base = unwrap_peft(model)
    spec = family_of(base)
    leaf = re.compile(rf"(?:{leaf_regex})")
    targets = []
    for name, module in base.named_modules():
        if not isinstance(module, nn.Linear):  # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear
            continue
        component = spec.component_of(name)
        leaf_match = bool(leaf.fullmatch(name.rsplit(".", 1)[-1]))
        if (
            (component == "language_model" and not name.startswith("lm_head") and leaf_match)
            or (component == "projector" and include_projector)
            or (component == "vision_tower" and include_vision and leaf_match)
        ):
            targets.append(name)
    if not targets:
        raise ValueError(
            f"LoRA target regex {leaf_regex!r} matched no linear layer in the {spec.name} language model"
        )
    return targets


def set_component_trainable(model: nn.Module, train: dict[str, bool]) -> None:
    spec = family_of(model)
    for name, param in unwrap_peft(model).named_parameters():
        component = spec.component_of(name)
        param.requires_grad_(bool(train.get(component, False)) if component else False)


def apply_finetune(model: nn.Module, finetune: FinetuneSpec | dict[str, Any]) -> nn.Module:
    """Freeze, wrap and return the model ready for training (a peft model under LoRA)."""
    spec = finetune if isinstance(finetune, FinetuneSpec) else FinetuneSpec(**finetune)
    if spec.mode == "full":
        set_component_trainable(model, spec.train)
        if spec.trainable_regex:
            pattern = re.compile(spec.trainable_regex)
            for name, param in model.named_parameters():
                param.requires_grad_(param.requires_grad and bool(pattern.search(name)))
        if spec.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        _check_something_trains(model)
        return model

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    lora = spec.lora
    assert isinstance(lora, LoraSpec)
    if lora.projector not in PROJECTOR_MODES:
        raise ValueError(f"lora.projector must be one of {PROJECTOR_MODES}, got {lora.projector!r}")
    family = family_of(model)
    _freeze_all(model)
    if spec.quantization is not None:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=spec.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        _freeze_all(model)  # prepare_model_for_kbit_training may unfreeze fp32 leftovers
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets = lora_target_modules(
        model,
        lora.target_modules,
        include_projector=lora.projector == "lora",
        include_vision=lora.vision_tower,
    )
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias=lora.bias,
        use_rslora=lora.use_rslora,
        modules_to_save=list(family.projector) if lora.projector == "full" else None,
    )
    peft_model = get_peft_model(model, config)
    log.info(
        "LoRA r=%d on %d modules of the language model%s",
        lora.r,
        len(targets),
        f" (projector: {lora.projector})",
    )
    _check_something_trains(peft_model)
    return peft_model


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameters, overall and per component (LoRA weights count with their host)."""
    base = unwrap_peft(model)
    spec = family_of(base)
    counts = {"total": 0, "trainable": 0}
    counts.update({f"trainable/{c}": 0 for c in COMPONENTS})
    for name, param in base.named_parameters():
        n = param.numel()
        counts["total"] += n
        if param.requires_grad:
            counts["trainable"] += n
            # LoRA weights and peft's modules_to_save copies sit under their host module's prefix.
            component = spec.component_of(name)
            if component is not None:
                counts[f"trainable/{component}"] += n
    return counts


def _freeze_all(model: nn.Module) -> None:
    for param in model.parameters():
        if param.requires_grad:  # quantized (integer) parameters refuse even requires_grad_(False)
            param.requires_grad_(False)


def _check_something_trains(model: nn.Module) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            "the fine-tuning settings leave no trainable parameter; check finetune.train / regex"
        )
