"""Directional ablation folded into the weights (Arditi et al. 2024, arXiv 2406.11717, section 2.4).

A model never writes along a unit direction ``r`` when every matrix that writes to the residual stream
is orthogonalised against it, ``W <- W - r r^T W``. In a VLM those are the token embeddings, the
projector's output layer (its outputs become the image tokens' embeddings), and in every decoder layer the
attention output projection and the MLP down projection (``o_proj`` and ``down_proj`` in all five
families). For pre-norm decoders (Llama, Qwen2, Idefics3's text model) the result computes exactly what the
model computes with ``h <- h - (h . r) r`` applied to the residual stream at every layer and position
(:func:`mirage.analysis.refusal.attach_ablation`).

Gemma 2/3 put a norm after each sub-layer (``post_attention_layernorm``, ``post_feedforward_layernorm``),
so what reaches the residual stream is ``g * x / rms(x)``. Its component along ``r`` is zero exactly when
``x`` is orthogonal to ``g * r``, so there the projections are orthogonalised against ``g * r`` instead:
the model still never writes along ``r``, but the rms of ``x`` changes, so it is close to the hooked
model, not equal to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mirage.models.families import decoder_layers, family_of, unwrap_peft

log = logging.getLogger(__name__)

# The modules that write each decoder layer's sub-layer outputs to the residual stream, each with the norm
# that Gemma 2/3 apply to that output before adding it.
SUBLAYER_WRITERS = (
    ("self_attn.o_proj", "post_attention_layernorm"),
    ("mlp.down_proj", "post_feedforward_layernorm"),
)
SANDWICH_NORM = "post_feedforward_layernorm"  # a layer that has it normalises after each sub-layer


@dataclass
class Writer:
    """One tensor whose hidden-size vectors (along ``axis``) are written to the residual stream."""

    name: str
    tensor: torch.Tensor  # a parameter, edited in place
    axis: int  # the dimension of size hidden: 0 for a Linear's weight and bias, 1 for [in, hidden] matrices
    gain: torch.Tensor | None = None  # the gain of a norm between the writer and the stream (Gemma 2/3)


def hidden_size(model: nn.Module) -> int:
    return int(unwrap_peft(model).get_input_embeddings().weight.shape[1])


def _norm_gain(norm: nn.Module, hidden: int) -> torch.Tensor:
    """An RMS norm's elementwise gain, up to a scalar: its output on a vector of ones (rms 1). Its form
    (``w`` or ``1 + w``) differs by family; its output does not need to be known."""
    param = next(norm.parameters())
    with torch.no_grad():
        return norm(torch.ones(1, hidden, dtype=param.dtype, device=param.device))[0].float()


def _linear_writers(name: str, module: nn.Linear, gain: torch.Tensor | None = None) -> list[Writer]:
    writers = [Writer(f"{name}.weight", module.weight, 0, gain)]
    if module.bias is not None:
        writers.append(Writer(f"{name}.bias", module.bias, 0, gain))
    return writers


def _projector_writers(model: nn.Module, hidden: int) -> list[Writer]:
    """The projector's last layer with hidden-size outputs: a Linear (LLaVA ``linear_2``, Qwen2-VL
    ``merger.mlp.2``, Idefics3 ``modality_projection.proj``) or a bare ``[in, hidden]`` projection matrix
    (Gemma 3 ``mm_input_projection_weight``). Modules are registered in the order they run in all five."""
    base = unwrap_peft(model)
    prefixes = family_of(model).projector

    def inside(name: str) -> bool:
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    found: list[Writer] = []
    for name, module in base.named_modules():
        if inside(name) and isinstance(module, nn.Linear) and module.out_features == hidden:
            found = _linear_writers(name, module)
    for name, param in base.named_parameters():
        matrix = param.dim() == 2 and param.shape[1] == hidden
        if inside(name) and name.endswith("projection_weight") and matrix:
            found = [Writer(name, param, 1)]
    if not found:
        raise ValueError(
            f"{type(base).__name__}: no layer of the projector {list(prefixes)} outputs {hidden}-dimensional "
            "vectors, so what it writes to the residual stream cannot be orthogonalised"
        )
    return found


def sublayer_outputs(layer: nn.Module) -> list[nn.Module]:
    """The modules whose outputs a decoder layer adds to the residual stream: its attention and its MLP
    or, in a layer with norms after its sub-layers (Gemma 2/3), those norms."""
    sandwich = hasattr(layer, SANDWICH_NORM)
    return [layer.get_submodule(norm if sandwich else path.split(".")[0]) for path, norm in SUBLAYER_WRITERS]


def residual_writers(model: nn.Module) -> list[Writer]:
    """Every tensor that writes to the language model's residual stream."""
    base = unwrap_peft(model)
    hidden = hidden_size(model)
    writers = [Writer("input_embeddings", base.get_input_embeddings().weight, 1)]
    writers += _projector_writers(model, hidden)
    for index, layer in enumerate(decoder_layers(model)):
        sandwich = hasattr(layer, SANDWICH_NORM)
        for path, norm_name in SUBLAYER_WRITERS:
            try:
                module = layer.get_submodule(path)
            except AttributeError:
                module = None
            if not isinstance(module, nn.Linear) or module.out_features != hidden:
                raise ValueError(
                    f"decoder layer {index} ({type(layer).__name__}) has no Linear {path!r} writing "
                    f"{hidden}-dimensional outputs; its residual writers are unknown"
                )
            gain = _norm_gain(layer.get_submodule(norm_name), hidden) if sandwich else None
            writers += _linear_writers(f"layer.{index}.{path}", module, gain)
    return writers


def _untie_output_embeddings(model: nn.Module) -> None:
    """Give ``lm_head`` its own copy of tied input embeddings (Gemma 3 ties them): the output head reads the
    stream and must stay as it was, while the input embeddings are orthogonalised."""
    base = unwrap_peft(model)
    head = base.get_output_embeddings()
    embeddings = base.get_input_embeddings()
    if head is None or head.weight.data_ptr() != embeddings.weight.data_ptr():
        return
    head.weight = nn.Parameter(embeddings.weight.detach().clone(), requires_grad=False)
    for config in {id(c): c for c in (base.config, base.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    log.info("untied lm_head from the input embeddings before orthogonalising them")


@torch.no_grad()
def orthogonalize_weights(model: nn.Module, direction: torch.Tensor) -> list[str]:
    """Orthogonalise every residual writer of ``model`` (in place) against ``direction``; the edited names.

    A peft model must be merged first (:func:`export_orthogonalized` does it)."""
    if hasattr(model, "merge_and_unload"):
        raise ValueError("orthogonalize_weights: merge the LoRA adapter first (peft merge_and_unload)")
    hidden = hidden_size(model)
    if direction.shape != (hidden,) or not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError(
            f"direction must be a finite non-zero vector of size {hidden}, got shape {tuple(direction.shape)}"
        )
    unit = direction.double() / direction.double().norm()
    _untie_output_embeddings(model)
    names = []
    for writer in residual_writers(model):
        u = unit if writer.gain is None else unit * writer.gain.to(unit.device).double()
        u = (u / u.norm()).to(writer.tensor.device)
        t = writer.tensor.data.double()
        if writer.axis == 0:  # t [hidden, ...]: remove u from every column
            moved = t.reshape(hidden, -1)
            edited = (moved - u[:, None] * (u @ moved)[None, :]).reshape(t.shape)
        else:  # t [n, hidden]: remove u from every row
            edited = t - (t @ u)[:, None] * u[None, :]
        writer.tensor.data.copy_(edited.to(writer.tensor.dtype))
        names.append(writer.name)
    return names


def export_orthogonalized(
    model: nn.Module, processor: Any, direction: torch.Tensor, out_dir: str | Path
) -> Path:
    """Write ``model`` orthogonalised against ``direction`` to ``out_dir`` with ``save_pretrained`` (weights
    and processor), loadable by stock ``AutoModelForImageTextToText.from_pretrained``. A LoRA model is
    merged first. Edits ``model`` in place (the merged one, for a peft model); pass a copy to keep it."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    names = orthogonalize_weights(model, direction)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    log.info("orthogonalised %d residual writers; export in %s", len(names), out_dir)
    return out_dir
