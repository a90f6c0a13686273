"""What the typographic attacks share: typesetting settings, the image cache, and the sample bookkeeping.

:class:`~mirage.evaluation.attacks.figstep.FigStepAttack` and
:class:`~mirage.evaluation.attacks.query_relevant.QueryRelevantAttack` subclass this. The rendered
image replaces ``sample.image`` (a PNG path under ``cache_dir``, shared by every sample that asks the same
text with the same settings), and ``meta`` records what was typeset (``typography``), how the rules read
the question (``typography_kind``), the font size in the written image (``typography_font_px``) and the
image the sample had (``original_image``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from mirage.data.records import Sample
from mirage.evaluation.attacks.base import Attack
from mirage.evaluation.attacks.grammar import Grammar
from mirage.evaluation.attacks.lexicon import load_lexicon
from mirage.evaluation.attacks.typographic_rules import TypographicRules
from mirage.evaluation.attacks.typography import (
    TextLayout,
    Typesetting,
    cache_key,
    image_over_text,
    layout_text,
    panel_box,
    text_box,
    text_image,
    write_once,
)

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / "mirage_typography"


class TypographicAttack(Attack):
    """Typesetting settings (:class:`~mirage.evaluation.attacks.typography.Typesetting`), the cache folder
    and the rules; subclasses choose the text and the layout in ``rewrite``."""

    align = "left"  # how lines sit in their box ("center": each line centred, the block too)

    def __init__(
        self,
        size: int = 336,
        cache_dir: str | Path | None = None,
        font: str = "DejaVu Sans",
        margin: float = 0.05,
        max_font_fraction: float = 0.1,
        min_font_px: int = 8,
        line_spacing: float = 1.25,
        text_fraction: float = 0.3,
        legible_px: float = 10.0,
        templates_file: str | Path | None = None,
    ) -> None:
        self.settings = Typesetting(
            size=int(size),
            font=str(font),
            margin=float(margin),
            max_font_fraction=float(max_font_fraction),
            min_font_px=int(min_font_px),
            line_spacing=float(line_spacing),
            text_fraction=float(text_fraction),
            legible_px=float(legible_px),
        )
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.rules = TypographicRules(Grammar(load_lexicon(templates_file)))
        self._layouts: dict[tuple[Any, ...], TextLayout] = {}
        self._warned = False

    def layout(self, paragraphs: Sequence[str], under_image: bool) -> TextLayout:
        """Where the text goes (memoised: shots and repeated questions share it)."""
        key = (tuple(paragraphs), under_image)
        if key not in self._layouts:
            s = self.settings
            box = panel_box(s) if under_image else text_box(s)
            self._layouts[key] = layout_text(paragraphs, box, s, align=self.align)
        return self._layouts[key]

    def render(self, paragraphs: Sequence[str], original: Path | None) -> tuple[Path, TextLayout]:
        """The PNG with ``paragraphs`` typeset (under ``original`` when given), written once."""
        under_image = original is not None
        layout = self.layout(paragraphs, under_image)
        kind = f"{self.name}/{'image_over_text' if under_image else 'text'}/{self.align}"
        key = cache_key(kind, paragraphs, self.settings, original)

        def draw() -> Image.Image:
            if original is None:
                return text_image(paragraphs, self.settings, self.align, layout)[0]
            with Image.open(original) as image:
                return image_over_text(image, paragraphs, self.settings, self.align, layout)[0]

        path = write_once(self.cache_dir, key, draw)
        if layout.font_px < self.settings.legible_px and not self._warned:
            self._warned = True
            log.warning(
                "%s: text set at %.1f px in a %d-px image (below %.0f px few models read it); "
                "the attack then tests the text prompt and a text-like image, not reading",
                self.name,
                layout.font_px,
                self.settings.size,
                self.settings.legible_px,
            )
        return path, layout

    def attacked(
        self, sample: Sample, question: str, image: Path, typeset: str, layout: TextLayout, **meta: Any
    ) -> Sample:
        new = self.variant(
            sample,
            question=question,
            shot=sample.meta.get("shot", 0),
            original_image=str(sample.image) if sample.image is not None else None,
            typography=typeset,
            typography_font_px=round(layout.font_px, 2),
            **meta,
        )
        new.image = image
        return new


def existing_image(sample: Sample, attack: str) -> Path | None:
    """The sample's image path, checked: an attack that draws on it fails naming the missing file."""
    if sample.image is None:
        return None
    path = Path(sample.image)
    if not path.is_file():
        raise FileNotFoundError(f"{attack}: image {path} of sample {sample.id!r} not found")
    return path
