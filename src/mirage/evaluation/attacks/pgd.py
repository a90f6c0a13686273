"""Projected gradient descent on one image's pixels towards a corpus of target answers (Qi et al. 2023).

The pixels live on the 8-bit grid (levels 0..255): the budget ``epsilon`` and the step ``step_size`` are whole
levels, and each step moves every pixel ``step_size`` levels against the sign of its gradient, then back into
the L-infinity ball around the start image and into 0..255. So the lossless PNG of the result is exactly the
optimised image. The loss is the mean over the targets of each target's mean next-token NLL, given the image
and the prompt; its gradient reaches the pixels through the processor's pipeline in torch
(:class:`~mirage.evaluation.attacks.pixel_layout.PixelLayout`), and every step takes the whole corpus
(accumulated over batches), so the run is deterministic for a given start image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from mirage.data.collate import IGNORE_INDEX, LABEL_KEYS, META_KEYS, VLMCollator
from mirage.data.records import Sample
from mirage.evaluation.attacks.pixel_layout import PixelLayout

LEVELS = 255  # the 8-bit grid: a budget of 255 levels is no budget


def target_batches(processor: Any, image: Path, prompt: str, targets: Sequence[str], batch_size: int) -> list:
    """Collated batches of (``image``, ``prompt``) -> each target: labels on the target answer only."""
    collate = VLMCollator(processor)
    samples = [
        Sample(id=f"target_{i}", question=prompt, answer=t, image=image) for i, t in enumerate(targets)
    ]
    return [collate(samples[i : i + batch_size]) for i in range(0, len(samples), batch_size)]


def _nll_sum(model: torch.nn.Module, batch: dict, pixel_values: torch.Tensor | None) -> torch.Tensor:
    """Sum over the batch of each target's mean next-token NLL (``pixel_values`` replace the batch's)."""
    device = next(model.parameters()).device
    inputs = {
        k: v.to(device) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
        if k not in META_KEYS and k not in LABEL_KEYS
    }
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values.to(device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:].to(device)
    mask = labels != IGNORE_INDEX
    logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (-(logp * mask).sum(dim=1) / mask.sum(dim=1)).sum()


@torch.no_grad()
def target_loss(
    model: torch.nn.Module,
    processor: Any,
    image: Path,
    prompt: str,
    targets: Sequence[str],
    batch_size: int = 8,
) -> float:
    """Mean over the targets of each target's mean token NLL, with ``image`` read from disk and processed by
    the processor, exactly as the evaluation reads it."""
    batches = target_batches(processor, Path(image), prompt, targets, batch_size)
    return float(sum(_nll_sum(model, batch, None) for batch in batches)) / len(targets)


def start_image(init_image: str | None, size: tuple[int, int], seed: int) -> np.ndarray:
    """[H, W, 3] uint8: seeded uniform noise, or ``init_image`` resized to the input size."""
    height, width = size
    if init_image is None:
        return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    with Image.open(init_image) as image:
        return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def optimise(
    model: torch.nn.Module,
    processor: Any,
    layout: PixelLayout,
    start: Path,
    prompt: str,
    targets: Sequence[str],
    *,
    epsilon: int,
    steps: int,
    step_size: int,
    batch_size: int,
) -> dict[str, Any]:
    """PGD from the image at ``start`` (a PNG at the layout's size): the best image seen (uint8 [H, W, 3])
    and the loss at every step (the full corpus' gradient each step, accumulated over batches)."""
    batches = target_batches(processor, start, prompt, targets, batch_size)
    with Image.open(start) as image:
        x0 = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).double()
    for batch in batches:  # the torch layout must give the collator's pixel_values of the start image
        layout.check(
            layout.batch(x0 / LEVELS, len(batch["labels"])), batch["pixel_values"], "the start image"
        )
    low, high = (x0 - epsilon).clamp(0, LEVELS), (x0 + epsilon).clamp(0, LEVELS)
    levels, best, best_loss, losses = x0.clone(), x0.clone(), math.inf, []
    for step in range(steps + 1):
        pixels = (levels / LEVELS).float().requires_grad_(True)
        loss = 0.0
        for batch in batches:
            part = _nll_sum(model, batch, layout.batch(pixels, len(batch["labels"]))) / len(targets)
            part.backward()
            loss += float(part.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"visual_pgd: the target loss is {loss} at step {step}")
        losses.append(loss)
        if loss < best_loss:
            best, best_loss = levels.clone(), loss
        if step < steps:  # whole levels: the image stays on the 8-bit grid
            levels = torch.minimum(torch.maximum(levels - step_size * pixels.grad.sign().double(), low), high)
    image = best.round().clamp(0, LEVELS).to(torch.uint8).permute(1, 2, 0).numpy()
    return {"image": image, "losses": losses, "best_loss": best_loss, "best_step": losses.index(best_loss)}
