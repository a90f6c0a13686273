"""A processor's image pipeline as a differentiable torch function, for images already at its input size.

An image processor turns an image into ``pixel_values``: resize, rescale (``rescale_factor``, 1/255),
normalise (``image_mean`` / ``image_std`` per channel) and arrange (channels first; Qwen2-VL's flattened,
temporally repeated patches; Idefics3's tiles and padding). At the processor's input size the resize is the
identity, so every entry of ``pixel_values`` is one pixel's normalised value, or padding. :class:`PixelLayout`
reads where each pixel goes from the processor itself: it processes a few images whose pixel values spell each
pixel's index in base 256, with rescaling and normalisation switched off, and reads the indices back. Then
``layout(x)`` normalises ``x`` (``[3, H, W]`` in [0, 1]) in torch and places it as the processor would, so
gradients reach the pixels. It is checked against the processor's own output on a random image: a processor
that resizes, crops or mixes pixels at this size is an error naming the size, not a wrong gradient.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image

# The largest difference from the processor's own pixel_values that counts as equal: float32 rounding of
# normalised values of magnitude ~2 (the processor may normalise in float64).
MATCH_TOLERANCE = 1e-4


def input_size(image_processor: Any) -> tuple[int, int]:
    """(height, width) of an image that the processor passes through without resizing.

    Read from its config: a centre crop's ``crop_size`` (CLIP, LLaVA), ``size`` as height and width
    (SigLIP, Gemma 3), ``shortest_edge`` or ``longest_edge`` (a square: CLIP without a crop, Idefics3), or,
    for processors whose ``size`` counts pixels (Qwen2-VL: ``patch_size * merge_size`` multiples), the
    smallest square at least ``min_pixels`` in area. Any other size can be given as ``image_size``."""
    size = dict(getattr(image_processor, "size", None) or {})
    crop = dict(getattr(image_processor, "crop_size", None) or {})
    if getattr(image_processor, "merge_size", None) and getattr(image_processor, "patch_size", None):
        factor = int(image_processor.patch_size) * int(image_processor.merge_size)
        min_pixels = int(getattr(image_processor, "min_pixels", None) or size.get("shortest_edge") or 1)
        side = factor * max(1, math.ceil(math.sqrt(min_pixels) / factor))
        return side, side
    if getattr(image_processor, "do_center_crop", False) and "height" in crop:
        return int(crop["height"]), int(crop["width"])
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    for key in ("shortest_edge", "longest_edge"):
        if key in size:
            return int(size[key]), int(size[key])
    raise ValueError(
        f"{type(image_processor).__name__}: cannot tell its input size from size={size} crop_size={crop}; "
        "set the attack's image_size"
    )


def _process(image_processor: Any, pixels: np.ndarray, raw: bool) -> torch.Tensor:
    """The processor's ``pixel_values`` of one ``[H, W, 3]`` uint8 image (``raw``: no rescale, normalise)."""
    options = {"do_rescale": False, "do_normalize": False} if raw else {}
    out = image_processor(images=[Image.fromarray(pixels, "RGB")], return_tensors="pt", **options)
    return out["pixel_values"].to(torch.float64)


class PixelLayout:
    """``layout(x)``: the processor's ``pixel_values`` of one image ``x`` (``[3, H, W]`` in [0, 1])."""

    def __init__(self, image_processor: Any, height: int, width: int) -> None:
        self.height, self.width = int(height), int(width)
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        self.where = f"{type(image_processor).__name__} at {self.height}x{self.width}"
        count = 3 * self.height * self.width
        index = np.arange(count, dtype=np.int64).reshape(3, self.height, self.width).transpose(1, 2, 0)
        # Positions that hold a pixel read 255 for an all-255 image; padding reads something else.
        valid = _process(image_processor, np.full_like(index, 255, dtype=np.uint8), raw=True) == 255
        source = torch.zeros(valid.shape, dtype=torch.int64)
        for digit in range(max(1, math.ceil(math.log(count, 256)))):
            spelled = ((index >> (8 * digit)) & 255).astype(np.uint8)
            source += _process(image_processor, spelled, raw=True).round().to(torch.int64) << (8 * digit)
        self.valid = valid
        self.source = torch.where(valid, source, 0)
        if self.source.max() >= count or self.source.min() < 0 or not valid.any():
            raise ValueError(f"{self.where}: the processor does not keep pixels in place; set image_size")
        missing = count - int(torch.unique(self.source[valid]).numel())
        if missing:
            raise ValueError(
                f"{self.where}: {missing} of {count} pixel values never reach pixel_values (a crop or "
                "resize at this size); set image_size to a size the processor keeps"
            )
        self.scale = float(image_processor.rescale_factor) * 255 if image_processor.do_rescale else 255.0
        self.normalize = bool(image_processor.do_normalize)
        channels = [torch.as_tensor(v, dtype=torch.float64).expand(3) for v in _mean_std(image_processor)]
        self.mean, self.std = (c.view(3, 1, 1).float() for c in channels)
        generator = np.random.default_rng(0)
        probe = generator.integers(0, 256, size=(self.height, self.width, 3), dtype=np.uint8)
        expected = _process(image_processor, probe, raw=False)
        self.padding = expected.float()  # what padding positions hold (they do not depend on the image)
        got = self(torch.from_numpy(probe).permute(2, 0, 1).float() / 255).double()
        self.check(got, expected, "a random image")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` ([3, H, W] in [0, 1], any float dtype) and place it as the processor does."""
        if tuple(x.shape) != (3, self.height, self.width):
            raise ValueError(f"{self.where}: expected an image of shape (3, H, W), got {tuple(x.shape)}")
        values = x.float() * self.scale
        if self.normalize:
            values = (values - self.mean.to(x.device)) / self.std.to(x.device)
        placed = values.reshape(-1)[self.source.to(x.device)]
        return torch.where(self.valid.to(x.device), placed, self.padding.to(x.device))

    def batch(self, x: torch.Tensor, images: int) -> torch.Tensor:
        """``pixel_values`` of a batch that shows ``x`` ``images`` times (the processor concatenates along
        the first dimension, one block per image)."""
        single = self(x)
        return single.repeat(images, *([1] * (single.dim() - 1)))

    def check(self, got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        """An error naming ``what`` unless ``got`` is the processor's ``expected`` pixel_values."""
        if got.shape != expected.shape:
            raise ValueError(
                f"{self.where}: pixel_values of {what} have shape {tuple(expected.shape)}, the "
                f"torch layout gives {tuple(got.shape)}"
            )
        gap = float((got.double().cpu() - expected.double().cpu()).abs().max())
        if gap > MATCH_TOLERANCE:
            raise ValueError(
                f"{self.where}: the torch layout differs from the processor's pixel_values of {what} by "
                f"{gap:.3g} (> {MATCH_TOLERANCE}); this processor changes images of this size"
            )


def _mean_std(image_processor: Any) -> tuple[Any, Any]:
    mean, std = getattr(image_processor, "image_mean", None), getattr(image_processor, "image_std", None)
    if image_processor.do_normalize and (mean is None or std is None):
        raise ValueError(f"{type(image_processor).__name__}: do_normalize without image_mean and image_std")
    return (mean if mean is not None else 0.0), (std if std is not None else 1.0)
