"""Reference strategies that run a model live: the LoRA model with adapters off, or a frozen copy."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from mirage.methods.losses import sequence_nll
from mirage.models.families import decoder_layers, family_of, unwrap_peft
from mirage.models.hooks import layer_hidden_states

if TYPE_CHECKING:
    from mirage.methods.base import MethodModule


@dataclass(frozen=True)
class ReferenceNeed:
    """One quantity a method reads from the reference model on one split (and one view of its batches)."""

    split: str
    kind: str  # "nll" or "states"
    label_key: str = "labels"  # nll: which tokens (answer "labels" or "prompt_labels")
    layer: int | None = None  # states: which decoder layer
    view: str | None = None  # None: the batch itself; "alternate": its alternate-answer view


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate deterministically (no dropout), then restore every module's own mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes.items():
            module.training = training


class ReferenceStrategy:
    """Base: computes reference values live from ``self.reference_model(method)``."""

    name = "base"

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        """Called from the method's constructor, while the model is still the pretrained one."""
        self.needs = needs

    def prepare(self, method: MethodModule) -> None:
        """Called from the method's ``setup('fit')``, before any checkpoint is restored."""

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        raise NotImplementedError
        yield

    def sequence_nll(
        self, method: MethodModule, batch: dict, label_key: str = "labels"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference (summed NLL, token count) per sequence of ``batch`` (a collated batch or a view)."""
        with self.reference_model(method) as model:
            return sequence_nll(model(**method.model_inputs(batch)).logits, batch[label_key])

    def layer_states(self, method: MethodModule, batch: dict, layer: int) -> torch.Tensor:
        """Reference hidden states ``[B, T, H]`` after decoder layer ``layer``."""
        with self.reference_model(method) as model:
            truncate = getattr(method, "truncate_passes", True)
            return layer_hidden_states(model, method.model_inputs(batch), layer, truncate=truncate)


class AdaptersOff(ReferenceStrategy):
    """The LoRA model with adapters disabled: the base model, for free."""

    name = "adapters_off"

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        super().attach(method, needs)
        if not hasattr(method.model, "disable_adapter"):
            raise ValueError("method.reference=adapters_off needs a LoRA model (finetune=lora or qlora)")

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        with method.model.disable_adapter(), eval_mode(method.model) as model:
            yield model


class FrozenCopy(ReferenceStrategy):
    """A deep copy, frozen before training; cut after the deepest layer read when only states are needed."""

    name = "frozen_copy"

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        super().attach(method, needs)
        frozen = copy.deepcopy(method.model)
        for param in frozen.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
        if needs and all(n.kind == "states" for n in needs) and getattr(method, "truncate_passes", True):
            keep = max(n.layer for n in needs if n.layer is not None) + 1
            _truncate_layers(frozen, keep)
        # Kept outside the LightningModule's children: it is not trained, not checkpointed, and moved by hand.
        self._frozen = [frozen.eval()]

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        frozen = self._frozen[0]
        device = next(method.model.parameters()).device
        if next(frozen.parameters()).device != device:
            frozen.to(device)
        with eval_mode(frozen) as model:
            yield model


class Untrained(ReferenceStrategy):
    """The method's own model, read before training starts (Precompute fills its cache with it)."""

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        with eval_mode(method.model) as model:
            yield model


def _truncate_layers(model: nn.Module, keep: int) -> None:
    layers = decoder_layers(model)
    if keep < len(layers):
        parent_path, _, attr = family_of(model).decoder_layers.rpartition(".")
        parent = unwrap_peft(model).get_submodule(parent_path)
        setattr(parent, attr, nn.ModuleList(list(layers)[:keep]))
