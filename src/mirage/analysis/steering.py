"""Activation steering at one decoder layer: add (or remove) a direction during every forward pass.

The direction is the mean difference between activations on harmful and on safe answers. By default
each dimension is z-scored first (pooled mean and standard deviation over both sets): a single
outlier channel with a huge spread would otherwise dominate the raw mean difference (reference
section 8's pitfall). The direction is returned with unit norm, so ``coeff`` is in activation units.

Modes: ``add`` adds ``coeff * u`` at every position (``coeff < 0`` subtracts it); ``project``
removes ``coeff`` times each position's component along ``u`` (``coeff = 1`` removes it fully).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mirage.data.records import Sample
from mirage.models.families import decoder_layers

log = logging.getLogger(__name__)
MODES = ("add", "project")


def mean_difference(
    harmful: torch.Tensor, safe: torch.Tensor, zscore: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Unit direction from ``safe`` ``[M, H]`` towards ``harmful`` ``[N, H]`` activations."""
    if harmful.dim() != 2 or safe.dim() != 2 or harmful.shape[1] != safe.shape[1]:
        raise ValueError(f"expected [N, H] and [M, H], got {tuple(harmful.shape)} and {tuple(safe.shape)}")
    if not len(harmful) or not len(safe):
        raise ValueError("need at least one harmful and one safe activation")
    harmful, safe = harmful.double(), safe.double()
    if zscore:
        pooled = torch.cat([harmful, safe])
        mean, std = pooled.mean(0), pooled.std(0, unbiased=False)
        harmful, safe = (harmful - mean) / (std + eps), (safe - mean) / (std + eps)
    direction = harmful.mean(0) - safe.mean(0)
    norm = direction.norm()
    if norm < eps:
        raise ValueError("harmful and safe activations have the same mean: no direction to steer along")
    return (direction / norm).float()


def steer_hidden(
    hidden: torch.Tensor, direction: torch.Tensor, coeff: float, mode: str = "add"
) -> torch.Tensor:
    """``hidden`` ``[..., H]`` steered along the unit ``direction``."""
    u = direction.to(device=hidden.device, dtype=hidden.dtype)
    if mode == "add":
        return hidden + coeff * u
    if mode == "project":
        return hidden - coeff * (hidden @ u)[..., None] * u
    raise ValueError(f"steering mode must be one of {MODES}, got {mode!r}")


@contextmanager
def steering(model: nn.Module, layer: int, direction: torch.Tensor, coeff: float, mode: str = "add"):
    """Steer decoder layer ``layer``'s output inside the block (generation included)."""
    handle = attach_steering(model, layer, direction, coeff, mode)
    try:
        yield
    finally:
        handle.remove()


def attach_steering(
    model: nn.Module, layer: int, direction: torch.Tensor, coeff: float, mode: str = "add"
) -> torch.utils.hooks.RemovableHandle:
    """A forward hook on decoder layer ``layer`` that steers its output until ``handle.remove()``."""
    if mode not in MODES:
        raise ValueError(f"steering mode must be one of {MODES}, got {mode!r}")
    layers = decoder_layers(model)
    if not -len(layers) <= layer < len(layers):
        raise IndexError(f"steering layer {layer}: the language model has {len(layers)} decoder layers")
    unit = direction / direction.norm()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (steer_hidden(output[0], unit, coeff, mode), *output[1:])
        return steer_hidden(output, unit, coeff, mode)

    return layers[layer].register_forward_hook(hook)


def direction_from_pairs(
    model: nn.Module,
    processor: Any,
    samples: list[Sample],
    layer: int,
    zscore: bool = True,
    batch_size: int = 16,
) -> torch.Tensor:
    """The mean-difference direction at ``layer`` from narrow samples (their ``meta`` holds both answers):
    activations pooled over the answer tokens of prompt + harmful answer vs prompt + safe answer."""
    from mirage.analysis.activations import collect_activations

    harmful, safe = [], []
    for sample in samples:
        if "harmful_response" not in sample.meta or "safe_response" not in sample.meta:
            raise ValueError(
                f"sample {sample.id}: steering data needs narrow-schema records "
                "(safe_response and harmful_response)"
            )
        harmful.append(Sample(sample.id, sample.question, sample.meta["harmful_response"], sample.image, {}))
        safe.append(Sample(sample.id, sample.question, sample.meta["safe_response"], sample.image, {}))
    site = f"language_model.{layer}"
    kwargs = {"pooling": "mean", "answer_only": True, "batch_size": batch_size}
    acts_h = collect_activations(model, processor, harmful, [site], **kwargs)[site]
    acts_s = collect_activations(model, processor, safe, [site], **kwargs)[site]
    return mean_difference(acts_h, acts_s, zscore=zscore)


class MeanDiffSteering:
    """Config-built steering (``configs/steering/``): a direction from a file or computed from narrow data
    on the model being evaluated, applied at ``layer`` with ``coeff`` for the rest of the run."""

    def __init__(
        self,
        layer: int,
        coeff: float,
        mode: str = "add",
        zscore: bool = True,
        direction_path: str | None = None,
        data: Callable[[], list[Sample]] | None = None,
        batch_size: int = 16,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"steering mode must be one of {MODES}, got {mode!r}")
        if direction_path is None and data is None:
            raise ValueError("steering needs `direction_path` (a saved direction) or `data` (narrow pairs)")
        self.layer, self.coeff, self.mode, self.zscore = int(layer), float(coeff), mode, bool(zscore)
        self.direction_path, self.data, self.batch_size = direction_path, data, int(batch_size)
        self.direction: torch.Tensor | None = None

    def compute_direction(self, model: nn.Module, processor: Any) -> torch.Tensor:
        if self.direction_path is not None:
            self.direction = load_direction(self.direction_path)
        else:
            assert self.data is not None
            self.direction = direction_from_pairs(
                model, processor, self.data(), self.layer, self.zscore, self.batch_size
            )
        return self.direction

    def attach(self, model: nn.Module, processor: Any) -> torch.utils.hooks.RemovableHandle:
        direction = self.direction if self.direction is not None else self.compute_direction(model, processor)
        log.info("steering: layer %d, %s, coeff %g", self.layer, self.mode, self.coeff)
        return attach_steering(model, self.layer, direction, self.coeff, self.mode)

    @contextmanager
    def applied(self, model: nn.Module, processor: Any) -> Iterator[None]:
        handle = self.attach(model, processor)
        try:
            yield
        finally:
            handle.remove()


def save_direction(direction: torch.Tensor, path: str | Path, **meta: Any) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"direction": direction.contiguous()}, str(path), metadata={k: str(v) for k, v in meta.items()})
    return path


def load_direction(path: str | Path) -> torch.Tensor:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"steering direction not found: {path}")
    return load_file(str(path))["direction"]
