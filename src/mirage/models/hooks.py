"""Read (and optionally stop at) the output of one decoder layer of a VLM's language model.

RMU needs only layer k's hidden states, so its passes can stop there: the hook stores the
output and raises :class:`StopForward`, which the caller catches. The graph up to layer k
stays alive, so a loss on the captured states still backpropagates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import torch
from torch import nn

from mirage.models.families import decoder_layers


class StopForward(Exception):
    """Raised by a capture hook to end a forward pass early."""


class LayerCapture:
    """Holds the captured hidden states ``[B, T, H]`` of one layer."""

    def __init__(self) -> None:
        self.hidden: torch.Tensor | None = None

    def get(self) -> torch.Tensor:
        if self.hidden is None:
            raise RuntimeError("the hooked layer did not run (was the forward pass cut before it?)")
        return self.hidden


def _layer_output(output: Any) -> torch.Tensor:
    # Decoder layers return a tensor in transformers 5, a tuple (hidden, ...) in older versions.
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def capture_layer(model: nn.Module, layer: int, stop: bool = False) -> Iterator[LayerCapture]:
    """Capture decoder layer ``layer``'s output during forwards inside the block.

    With ``stop=True`` the forward pass ends right after that layer: wrap the call in
    :func:`run_until_captured`.
    """
    layers = decoder_layers(model)
    if not -len(layers) <= layer < len(layers):
        raise IndexError(f"layer {layer} out of range: the language model has {len(layers)} decoder layers")
    capture = LayerCapture()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        capture.hidden = _layer_output(output)
        if stop:
            raise StopForward

    handle = layers[layer].register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


def run_until_captured(forward: Callable[[], Any], capture: LayerCapture) -> torch.Tensor:
    """Run ``forward`` (inside ``capture_layer(..., stop=True)``) and return the captured states."""
    with suppress(StopForward):
        forward()
    return capture.get()


def layer_hidden_states(
    model: nn.Module, inputs: dict[str, Any], layer: int, truncate: bool = True
) -> torch.Tensor:
    """Hidden states after decoder layer ``layer`` for one batch; stops there when ``truncate``."""
    with capture_layer(model, layer, stop=truncate) as capture:
        return run_until_captured(lambda: model(**inputs, use_cache=False), capture)
