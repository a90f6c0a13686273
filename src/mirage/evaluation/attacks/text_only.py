"""Text-only attack: the same question with no image, or with a blank image.

The question is unchanged, even when it refers to "the image": comparing answers with and
without the visual input shows how much a model's refusals rest on the text alone. The
blank image is written once (a PNG named after its size and colour) and shared by every sample.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack

MODES = ("no_image", "blank_image")


class TextOnlyAttack(Attack):
    """``mode="no_image"`` drops the image; ``"blank_image"`` swaps in one blank PNG."""

    def __init__(
        self,
        mode: str = "no_image",
        blank_color: Sequence[int] = (255, 255, 255),
        size: int = 336,
        cache_dir: str | Path | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"text_only: mode must be one of {MODES}, got {mode!r}")
        color = tuple(int(c) for c in blank_color)  # a Hydra ListConfig arrives as a list
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise ValueError(f"text_only: blank_color must be three ints in 0..255, got {blank_color!r}")
        if int(size) < 1:
            raise ValueError(f"text_only: size must be positive, got {size}")
        self.mode, self.blank_color, self.size = mode, color, int(size)
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "mirage_blank_images"
        self.name = f"text_only_{mode}"
        self._blank: Path | None = None

    def blank_image(self) -> Path:
        """The blank PNG, written on first use (atomically: parallel jobs may share the cache)."""
        if self._blank is None:
            r, g, b = self.blank_color
            path = self.cache_dir / f"blank_{self.size}x{self.size}_{r}_{g}_{b}.png"
            if not path.is_file():
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".png", dir=self.cache_dir)
                os.close(fd)
                Image.new("RGB", (self.size, self.size), self.blank_color).save(tmp, format="PNG")
                os.replace(tmp, path)
            self._blank = path
        return self._blank

    def rewrite(self, sample: Sample) -> list[Sample]:
        new = self.variant(
            sample,
            shot=sample.meta.get("shot", 0),
            original_image=str(sample.image) if sample.image is not None else None,
        )
        new.image = None if self.mode == "no_image" else self.blank_image()
        return [new]
