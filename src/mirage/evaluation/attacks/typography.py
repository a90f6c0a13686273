"""Typesetting text into images for the typographic attacks (FigStep, MM-SafetyBench's query-relevant images).

Text is drawn with Pillow in a font that matplotlib ships (DejaVu Sans by default, found with
``matplotlib.font_manager.findfont``), black on white, word-wrapped to the width of its box, at the
largest font size that fits (at most ``max_font_fraction`` of the image side: FigStep's 80 px on 760 px).
When even ``min_font_px`` does not fit, the image is drawn ``scale`` times larger and shrunk to ``size``
(what a processor's resize would do), so its text ends up below ``min_font_px``: :attr:`TextLayout.font_px`
is the font size in the written image, and a text smaller than ``legible_px`` there is logged as a warning.

Images are written once per (text, settings, font file, Pillow and FreeType versions, original image
pixels) into a cache folder, named by a hash of all of these, atomically (parallel jobs may share it).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import PIL
from PIL import Image, ImageDraw, ImageFont, features

from mirage.utils.hashing import file_hash, stable_hash

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1  # part of every cache key: bump when the drawing below changes
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


@dataclass(frozen=True)
class Typesetting:
    """How text is set: the image side, the font, and the bounds on its size."""

    size: int = 336  # side of the square image in pixels (LLaVA-1.5's input; the tiny models' is 32)
    font: str = "DejaVu Sans"  # a font family matplotlib's font manager finds
    margin: float = 0.05  # blank border around the text, as a fraction of the side
    max_font_fraction: float = 0.1  # the largest font size, as a fraction of the side
    min_font_px: int = 8  # below this the text is drawn on a larger canvas and shrunk
    line_spacing: float = 1.25  # baseline-to-baseline distance over the font size
    text_fraction: float = 0.3  # text under an image: the text panel's share of the height
    legible_px: float = 10.0  # a warning is logged when the text ends up smaller than this

    def __post_init__(self) -> None:
        checks = {
            "size": self.size >= 8,
            "margin": 0 <= self.margin < 0.5,
            "max_font_fraction": 0 < self.max_font_fraction <= 1,
            "min_font_px": self.min_font_px >= 1,
            "line_spacing": self.line_spacing >= 1,
            "text_fraction": 0 < self.text_fraction < 1,
            "legible_px": self.legible_px >= 0,
        }
        bad = [f"{name}={getattr(self, name)!r}" for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"typography: bad setting(s) {', '.join(bad)} (size >= 8, 0 <= margin < 0.5, "
                "0 < max_font_fraction <= 1, min_font_px >= 1, line_spacing >= 1, 0 < text_fraction < 1)"
            )


@dataclass(frozen=True)
class TextLayout:
    """Where each line goes on a ``canvas`` x ``canvas`` image, drawn at ``draw_px`` and shrunk ``scale``
    times to the written image (``scale`` 1: drawn as written)."""

    lines: tuple[str, ...]
    origins: tuple[tuple[int, int], ...]  # each line's left edge and top (Pillow's "la" anchor)
    draw_px: int
    line_height: int
    canvas: int
    scale: int

    @property
    def font_px(self) -> float:
        """The font size in the written image."""
        return self.draw_px / self.scale


@lru_cache(maxsize=8)
def find_font(family: str) -> Path:
    """The font file of ``family`` that matplotlib's font manager finds (no silent fallback to another)."""
    from matplotlib import font_manager

    try:
        path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    except ValueError as err:
        raise ValueError(
            f"typography: font family {family!r} not found by matplotlib's font manager "
            "(matplotlib ships 'DejaVu Sans', 'DejaVu Sans Mono' and 'DejaVu Serif')"
        ) from err
    return Path(path)


@lru_cache(maxsize=256)
def load_font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


@lru_cache(maxsize=8)
def _font_digest(path: str) -> str:
    return file_hash(path)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word wider than a line is broken between characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        while len(word) > 1 and font.getlength(word) > width:
            cut = 1  # the longest head of the word that fits (at least one character)
            while cut < len(word) - 1 and font.getlength(word[: cut + 1]) <= width:
                cut += 1
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    return lines


def layout_text(
    paragraphs: Sequence[str],
    box: tuple[float, float, float, float],
    settings: Typesetting,
    align: str = "left",
) -> TextLayout:
    """Lines and origins of ``paragraphs`` (each wrapped on its own) in ``box`` = (left, top, width,
    height), as fractions of the side: the largest font size that fits, block centred vertically when
    ``align="center"`` (each line centred too), top-left otherwise."""
    if align not in ("left", "center"):
        raise ValueError(f"typography: align must be 'left' or 'center', got {align!r}")
    texts = [" ".join(p.split()) for p in paragraphs if p.strip()]
    if not texts:
        raise ValueError("typography: nothing to typeset (every paragraph is empty)")
    path = str(find_font(settings.font))
    for scale in range(1, 65):
        canvas = settings.size * scale
        left, top, width, height = (round(v * canvas) for v in box)
        largest = max(1, int(settings.max_font_fraction * canvas))
        smallest = min(settings.min_font_px, largest)

        def fits(px: int, width: int = width, height: int = height) -> list[str] | None:
            font = load_font(path, px)
            lines = [line for text in texts for line in wrap(text, font, width)]
            line_height = _line_height(font, px, settings)
            tall = line_height * (len(lines) - 1) + sum(font.getmetrics())
            wide = max(font.getlength(line) for line in lines)
            return lines if tall <= height and wide <= width else None

        if fits(smallest) is None:
            continue
        low, high = smallest, largest  # the largest px that fits: fits(low) holds throughout
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) is not None else (low, mid - 1)
        lines = fits(low)
        assert lines is not None
        font = load_font(path, low)
        line_height = _line_height(font, low, settings)
        block = line_height * (len(lines) - 1) + sum(font.getmetrics())
        y0 = top + (height - block) // 2 if align == "center" else top
        origins = []
        for i, line in enumerate(lines):
            x = left + round((width - font.getlength(line)) / 2) if align == "center" else left
            origins.append((x, y0 + i * line_height))
        return TextLayout(tuple(lines), tuple(origins), low, line_height, canvas, scale)
    raise ValueError(
        f"typography: {sum(map(len, texts))} characters do not fit a {settings.size}-px image even drawn "
        "64 times larger; shorten the text or raise the size"
    )


def _line_height(font: ImageFont.FreeTypeFont, px: int, settings: Typesetting) -> int:
    # Never below ascent + descent, so lines do not overlap (each line's band holds only its own ink).
    return max(sum(font.getmetrics()), round(settings.line_spacing * px))


def draw_layout(image: Image.Image, layout: TextLayout, settings: Typesetting) -> None:
    """Draw ``layout``'s lines onto ``image`` (the canvas, before any shrinking), black."""
    font = load_font(str(find_font(settings.font)), layout.draw_px)
    draw = ImageDraw.Draw(image)
    for line, origin in zip(layout.lines, layout.origins, strict=True):
        draw.text(origin, line, font=font, fill=BLACK)


def text_box(settings: Typesetting) -> tuple[float, float, float, float]:
    """The whole image inside the margins."""
    m = settings.margin
    return (m, m, 1 - 2 * m, 1 - 2 * m)


def text_image(
    paragraphs: Sequence[str], settings: Typesetting, align: str = "left", layout: TextLayout | None = None
) -> tuple[Image.Image, TextLayout]:
    """White square image with ``paragraphs`` set inside the margins (FigStep; MM-SafetyBench's TYPO)."""
    layout = layout or layout_text(paragraphs, text_box(settings), settings, align)
    canvas = Image.new("RGB", (layout.canvas, layout.canvas), WHITE)
    draw_layout(canvas, layout, settings)
    return _shrink(canvas, settings), layout


def panel_box(settings: Typesetting) -> tuple[float, float, float, float]:
    """The text panel under an image: the bottom ``text_fraction`` of the side, inside the margins."""
    m, top = settings.margin, 1 - settings.text_fraction
    return (m, top + m / 2, 1 - 2 * m, settings.text_fraction - 1.5 * m)


def image_over_text(
    original: Image.Image,
    paragraphs: Sequence[str],
    settings: Typesetting,
    align: str = "center",
    layout: TextLayout | None = None,
) -> tuple[Image.Image, TextLayout]:
    """The original image, scaled to fit above a text panel, with ``paragraphs`` set in the panel.

    One square image, so a processor that centre-crops to a square (CLIP's) keeps the text."""
    layout = layout or layout_text(paragraphs, panel_box(settings), settings, align)
    canvas = Image.new("RGB", (layout.canvas, layout.canvas), WHITE)
    room_w, room_h = layout.canvas, round((1 - settings.text_fraction) * layout.canvas)
    ratio = min(room_w / original.width, room_h / original.height)
    fitted = original.convert("RGB").resize(
        (max(1, round(original.width * ratio)), max(1, round(original.height * ratio))),
        Image.Resampling.LANCZOS,
    )
    canvas.paste(fitted, ((room_w - fitted.width) // 2, (room_h - fitted.height) // 2))
    draw_layout(canvas, layout, settings)
    return _shrink(canvas, settings), layout


def _shrink(canvas: Image.Image, settings: Typesetting) -> Image.Image:
    if canvas.width == settings.size:
        return canvas
    return canvas.resize((settings.size, settings.size), Image.Resampling.LANCZOS)


def cache_key(
    kind: str, paragraphs: Sequence[str], settings: Typesetting, original: Path | None
) -> dict[str, Any]:
    """Everything an image depends on."""
    font = str(find_font(settings.font))
    return {
        "kind": kind,
        "paragraphs": list(paragraphs),
        "settings": asdict(settings),
        "font_sha256": _font_digest(font),
        "pillow": PIL.__version__,
        "freetype": features.version("freetype2"),
        "layout_version": LAYOUT_VERSION,
        "original_sha256": file_hash(original) if original is not None else None,
    }


def write_once(cache_dir: Path, key: dict[str, Any], draw: Callable[[], Image.Image]) -> Path:
    """``cache_dir/<hash of key>.png``, drawn by ``draw()`` and written atomically unless it is there."""
    path = cache_dir / f"{stable_hash(key)[:24]}.png"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".png", dir=cache_dir)
        os.close(fd)
        try:
            draw().save(tmp, format="PNG")
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path
