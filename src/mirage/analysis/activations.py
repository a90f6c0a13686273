"""Pooled activations at chosen layers of a VLM's language model, vision tower and projector.

A *site* names where to read: ``language_model.<k>`` (output of decoder layer k),
``vision_tower.<k>`` (output of vision encoder layer k) or ``projector`` (the image features the
language model receives). Each sample gives one vector per site: the mean over its tokens (text
sites: non-padding tokens, or answer tokens only with ``answer_only``; vision sites: patches), or
the last token. Text-only samples have no vision rows, so vision sites list the image samples only.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from mirage.data.collate import LABEL_KEYS, META_KEYS, VLMCollator
from mirage.data.records import Sample
from mirage.models.families import decoder_layers, family_of, get_submodule, unwrap_peft

POOLINGS = ("mean", "last")


def vision_layers(model: nn.Module) -> nn.ModuleList:
    """The vision encoder's layers: the longest ModuleList inside the family's vision tower (CLIP and SigLIP
    ``encoder.layers``, Qwen2-VL ``blocks``), so no family needs a new entry."""
    family = family_of(model)
    best: nn.ModuleList | None = None
    for prefix in family.vision_tower:
        for name, module in unwrap_peft(model).named_modules():
            inside = name.startswith(prefix + ".")
            in_projector = any(name.startswith(p + ".") or name == p for p in family.projector)
            candidate = inside and not in_projector and isinstance(module, nn.ModuleList)
            if candidate and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise ValueError(f"no layer list found inside the {family.name} vision tower {family.vision_tower}")
    return best


def site_module(model: nn.Module, site: str) -> nn.Module:
    """The module whose output a site reads."""
    component, _, index = site.partition(".")
    if component == "projector":
        return get_submodule(model, family_of(model).projector[0])
    layers = {"language_model": decoder_layers, "vision_tower": vision_layers}.get(component)
    if layers is None or not index.lstrip("-").isdigit():
        raise ValueError(
            f"bad activation site {site!r}: use language_model.<k>, vision_tower.<k> or projector"
        )
    modules = layers(model)
    k = int(index)
    if not -len(modules) <= k < len(modules):
        raise IndexError(f"site {site!r}: the {component} has {len(modules)} layers")
    return modules[k]


def _output(output: Any) -> torch.Tensor:
    # Layers return a tensor in transformers 5, a tuple (hidden, ...) in older versions.
    return output[0] if isinstance(output, tuple) else output


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[B, T, H] and a [B, T] mask -> [B, H]."""
    mask = mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask[..., None]).sum(1) / mask.sum(1).clamp_min(1)[:, None]
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # position of each row's last selected token
    return hidden[torch.arange(hidden.shape[0]), last]


@torch.no_grad()
def collect_activations(
    model: nn.Module,
    processor: Any,
    samples: Sequence[Sample],
    sites: Sequence[str],
    *,
    pooling: str = "mean",
    answer_only: bool = False,
    batch_size: int = 16,
    max_length: int = 2048,
) -> dict[str, torch.Tensor]:
    """site -> ``[N, H]`` float32 (N = samples, or image samples for vision sites).

    ``answer_only`` renders prompt + answer and pools over the answer tokens (steering directions);
    otherwise the prompt alone is rendered, as for generation.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    collate = VLMCollator(processor, max_length=max_length, train=answer_only)
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {site: [] for site in sites}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(samples), batch_size):
            chunk = list(samples[start : start + batch_size])
            batch = collate(chunk)
            text_mask = batch["labels"] != -100 if answer_only else batch["attention_mask"].bool()
            captured: dict[str, torch.Tensor] = {}
            with ExitStack() as stack:
                for site in sites:
                    stack.enter_context(_capture(site_module(model, site), site, captured))
                inputs = {
                    k: v.to(device) if isinstance(v, torch.Tensor) else v
                    for k, v in batch.items()
                    if k not in META_KEYS and k not in LABEL_KEYS
                }
                model(**inputs, use_cache=False)
            for site in sites:
                hidden = captured[site].float().cpu() if site in captured else None
                if hidden is None:  # a text-only batch never runs the vision side
                    continue
                if hidden.dim() == 2:  # some projectors flatten images: [n_images * patches, H]
                    n_images = sum(s.image is not None for s in chunk)
                    hidden = hidden.reshape(n_images, -1, hidden.shape[-1])
                if site.startswith("language_model"):
                    out[site].append(_pool(hidden, text_mask, pooling))
                else:
                    out[site].append(_pool(hidden, torch.ones(hidden.shape[:2], dtype=torch.bool), pooling))
    finally:
        model.train(was_training)
    return {site: torch.cat(rows) if rows else torch.empty(0) for site, rows in out.items()}


class _capture:
    """Context manager: store a module's output in ``captured[site]`` (the last call wins)."""

    def __init__(self, module: nn.Module, site: str, captured: dict[str, torch.Tensor]) -> None:
        self.module, self.site, self.captured = module, site, captured

    def __enter__(self) -> _capture:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.captured[self.site] = _output(output).detach()

        self.handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.handle.remove()
