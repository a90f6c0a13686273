"""RMU: Representation Misdirection for Unlearning (Li et al., 2024), as used by Safety Mirage.

    L = MSE(h_k(x_forget), c u/||u||) + alpha * MSE(h_k(x_retain), h_k^ref(x_retain)) + lambda * CE(retain)

h_k is the output of decoder layer k of the *language model* (found through the family map),
u ~ U[0, 1)^H is drawn once from ``control_seed`` and saved with the run. The MSEs average
squared differences over the selected tokens and the hidden dimension (the reference code's
``mse_loss``; the per-token squared norm divided by H). Only layer k is read, so the forget
pass and the reference pass stop after layer k; only the retain pass that feeds the CE term
runs the whole model (and none does when lambda = 0). The forget part (``forget_loss``) is the
first MSE; the retain part is the rest.

By default (full fine-tuning) only ``mlp.down_proj`` of layers k-2..k and the projector
train, as in the reference; under LoRA every adapter trains.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from safetensors.torch import save_file

from mirage.data.collate import IGNORE_INDEX
from mirage.methods.losses import answer_cross_entropy
from mirage.methods.reference import ReferenceNeed, ReferenceStrategy
from mirage.methods.unlearning import UnlearningMethod, require, require_weights
from mirage.models.families import decoder_layers, family_of
from mirage.models.hooks import capture_layer, layer_hidden_states, run_until_captured

TOKEN_MASKS = ("all", "text", "answer")


def control_vector(hidden_size: int, coeff: float, seed: int) -> torch.Tensor:
    """c * u / ||u|| with u ~ U[0, 1)^H drawn from its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=generator)
    return coeff * u / u.norm()


def masked_mse(states: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over selected tokens and hidden units of (states - target)^2."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    squared = (states.float() - target.float()) ** 2 * weights
    return squared.sum() / (weights.sum() * states.shape[-1]).clamp(min=1)


class RMU(UnlearningMethod):
    def __init__(
        self,
        *args: Any,
        reference: ReferenceStrategy | None,
        layer: int = 7,
        steering_coeff: float = 10.0,
        alpha: float = 1.0,
        token_mask: str = "all",
        control_seed: int = 0,
        trainable_layers: list[int] | None = None,
        trainable_module: str = "mlp.down_proj",
        train_projector: bool = True,
        trainable_regex: str | None = None,
        truncate_passes: bool = True,
        **kwargs: Any,
    ) -> None:
        # An explicit trainable_regex is applied by the base; None means RMU's own default (below).
        super().__init__(*args, trainable_regex=trainable_regex, **kwargs)
        require(token_mask in TOKEN_MASKS, "token_mask", token_mask, f"one of {TOKEN_MASKS}")
        n_layers = len(decoder_layers(self.model))
        in_range = f"a decoder layer index in 0..{n_layers - 1} (the language model has {n_layers})"
        require(0 <= layer < n_layers, "layer", layer, in_range)
        for index in trainable_layers or []:
            require(0 <= index < n_layers, "trainable_layers", list(trainable_layers), in_range)
        require(math.isfinite(steering_coeff) and steering_coeff > 0, "steering_coeff", steering_coeff, "> 0")
        require_weights(alpha=alpha)
        self.layer, self.alpha, self.token_mask = layer, alpha, token_mask
        self.steering_coeff, self.control_seed = steering_coeff, control_seed
        # Stop the forget and reference passes after layer k (off only to measure what that saves).
        self.truncate_passes = truncate_passes
        hidden = self.model.get_input_embeddings().weight.shape[-1]
        # A persistent buffer: saved in checkpoints and exported with the model directory.
        self.register_buffer("control", control_vector(hidden, steering_coeff, control_seed))
        if trainable_regex is None and not hasattr(self.model, "disable_adapter"):
            self.restrict_trainable(
                self.default_trainable_regex(trainable_layers, trainable_module, train_projector)
            )
        needs = [ReferenceNeed("retain", "states", layer=layer)] if alpha > 0 else []
        self.attach_reference(reference, needs)

    def default_trainable_regex(self, layers: list[int] | None, module: str, projector: bool) -> str:
        """The reference's choice: ``module`` of layers k-2..k (and the projector), via the family map."""
        family = family_of(self.model)
        layers = (
            layers if layers is not None else [i for i in range(self.layer - 2, self.layer + 1) if i >= 0]
        )
        parts = [
            rf"^{re.escape(family.decoder_layers)}\.({'|'.join(map(str, layers))})\.{re.escape(module)}\."
        ]
        if projector:
            parts += [rf"^{re.escape(p)}\." for p in family.projector]
        return "|".join(parts)

    def save_pretrained(self, out_dir, extra=None):
        out = super().save_pretrained(
            out_dir, extra={"rmu_layer": self.layer, "control_seed": self.control_seed, **(extra or {})}
        )
        save_file(
            {"control": self.control.detach().cpu().contiguous()}, out / "rmu_control_vector.safetensors"
        )
        return out

    def token_weights(self, batch: dict[str, Any]) -> torch.Tensor:
        mask = batch["attention_mask"].bool()
        if self.token_mask == "text":
            image_token_id = getattr(self.processor, "image_token_id", None)
            if image_token_id is not None:
                mask = mask & (batch["input_ids"] != image_token_id)
        elif self.token_mask == "answer":
            # labels[t] marks token t; the hidden state at t is what represents it.
            mask = mask & (batch["labels"] != IGNORE_INDEX)
        return mask

    def forget_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        forget = batch["forget"]
        h_forget = layer_hidden_states(
            self.model, self.model_inputs(forget), self.layer, truncate=self.truncate_passes
        )
        target = self.control.to(h_forget.dtype).expand_as(h_forget)
        forget_mse = masked_mse(h_forget, target, self.token_weights(forget))
        norm = h_forget.float().norm(dim=-1).mean().detach()
        return {"forget_mse": forget_mse, "forget_norm": norm, "forget_loss": forget_mse}

    def retain_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.alpha == 0 and self.retain_weight == 0:
            return {}
        retain = batch["retain"]
        # The CE term needs the whole retain pass; otherwise it stops after layer k too.
        stop = self.retain_weight == 0 and self.truncate_passes
        with capture_layer(self.model, self.layer, stop=stop) as capture:
            if stop:
                h_retain, out = run_until_captured(lambda: self(retain, use_cache=False), capture), None
            else:
                out = self(retain, use_cache=False)
                h_retain = capture.get()
        terms: dict[str, torch.Tensor] = {}
        if self.alpha > 0:
            h_ref = self.reference.layer_states(self, retain, self.layer)
            terms["retain_mse"] = masked_mse(h_retain, h_ref.to(h_retain.dtype), self.token_weights(retain))
            terms["retain_loss"] = self.alpha * terms["retain_mse"]
        if self.retain_weight > 0:
            ce_terms = self.retain_ce_terms(answer_cross_entropy(out.logits, retain["labels"]))
            terms["retain_ce"] = ce_terms["retain_ce"]
            terms["retain_loss"] = terms.get("retain_loss", 0.0) + ce_terms["retain_loss"]
        return terms
