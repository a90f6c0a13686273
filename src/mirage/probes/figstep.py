"""``figstep``: the request typeset into the image as a list heading, and a neutral text prompt (Gong et al.
2023, arXiv 2311.05608; the attack is :class:`mirage.evaluation.attacks.figstep.FigStepAttack`).

Variants: ``figstep`` (the paper's: a white image holding "Steps to X." and empty items 1-3, in place of
the question's image) and ``figstep/with_image`` (the same list in a panel under the question's own image,
for benchmarks whose harm is in the picture). Images are set at the audited model's input size (its
processor's crop; 336 for LLaVA-1.5, 32 for the tiny models, where no text is legible: see
docs/audit.md) unless ``size`` is given, and kept under the target's work folder, one PNG per text and
settings (a resumed audit reuses them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirage.probes.base import AuditTarget, Probe, ProbeVariant, attack_variant

DEFAULT_SIDE = 336  # LLaVA-1.5's input, for processors with a dynamic resolution (Qwen2-VL)


def input_side(processor: Any) -> int | None:
    """The side of the square images ``processor`` feeds its model (CLIP-like: the crop; fixed-size
    resizers: the height), or None when it keeps a dynamic resolution (Qwen2-VL's pixel budget)."""
    image_processor = getattr(processor, "image_processor", processor)

    def field(size: Any, name: str) -> int | None:  # a dict, or transformers' SizeDict
        value = size.get(name) if isinstance(size, dict) else getattr(size, name, None)
        return int(value) if value else None

    crop, size = getattr(image_processor, "crop_size", None), getattr(image_processor, "size", None)
    if getattr(image_processor, "do_center_crop", False) and crop is not None and field(crop, "height"):
        return field(crop, "height")
    if size is not None:
        if field(size, "height") and field(size, "height") == field(size, "width"):
            return field(size, "height")
        if field(size, "shortest_edge") and not field(size, "longest_edge"):
            return field(size, "shortest_edge")
    return None


def model_input_side(model_dir: Path) -> int:
    """The side of the square images the model at ``model_dir`` is fed (its processor's), else 336."""
    from mirage.models.loading import load_processor

    return input_side(load_processor(model_dir)) or DEFAULT_SIDE


def typography_dir(target: AuditTarget) -> str:
    return str(Path(target.work_dir) / "typography")


class FigStepProbe(Probe):
    name = "figstep"

    def __init__(self, size: int | None = None, keep_image: Sequence[bool] = (False, True)) -> None:
        keep = [bool(k) for k in keep_image]
        if not keep:
            raise ValueError("probe figstep: keep_image must list at least one of false, true")
        if size is not None and int(size) < 8:
            raise ValueError(f"probe figstep: size must be null or at least 8 pixels, got {size}")
        self.size = None if size is None else int(size)
        self.keep_image = list(dict.fromkeys(keep))

    def settings(self) -> dict[str, Any]:
        return {"size": self.size, "keep_image": self.keep_image}

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        side = self.size or model_input_side(target.model_dir)
        return [
            attack_variant(
                "figstep/with_image" if keep else "figstep",
                "figstep",
                params={"size": side, "keep_image": keep},
                size=side,
                keep_image=keep,
                cache_dir=typography_dir(target),
            )
            for keep in self.keep_image
        ]
