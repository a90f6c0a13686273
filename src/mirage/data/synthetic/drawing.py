"""The synthetic world's images: one coloured shape in one quadrant of a lightly noisy background."""

from __future__ import annotations

import random

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "bar", "dot", "ell", "cross")


def draw_object(
    shape: str, colour: tuple[int, int, int], quadrant: int, size: int, rng: random.Random
) -> Image.Image:
    """A ``size`` x ``size`` image of ``shape`` in ``colour`` in ``quadrant`` (0-3: top left, top right,
    bottom left, bottom right), jittered by a pixel and sprinkled with noise drawn from ``rng``."""
    image = Image.new("RGB", (size, size), (245, 245, 240))
    pixels = image.load()
    for _ in range(size * 2):  # light noise so that no two images are identical
        pixels[rng.randrange(size), rng.randrange(size)] = tuple(rng.randrange(200, 256) for _ in range(3))
    draw = ImageDraw.Draw(image)
    quarter = size // 4
    cx = quarter * (1 if quadrant % 2 == 0 else 3) + rng.randint(-1, 1)
    cy = quarter * (1 if quadrant < 2 else 3) + rng.randint(-1, 1)
    r = size // 6
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=colour)
    elif shape == "bar":
        draw.rectangle((cx - r, cy - 1, cx + r, cy + 1), fill=colour)
    elif shape == "dot":
        draw.ellipse((cx - r // 2, cy - r // 2, cx + r // 2, cy + r // 2), fill=colour)
    elif shape == "ell":
        draw.rectangle((cx - r, cy - r, cx - r + 2, cy + r), fill=colour)
        draw.rectangle((cx - r, cy + r - 2, cx + r, cy + r), fill=colour)
    elif shape == "cross":
        draw.rectangle((cx - r, cy - 1, cx + r, cy + 1), fill=colour)
        draw.rectangle((cx - 1, cy - r, cx + 1, cy + r), fill=colour)
    else:
        raise ValueError(f"draw_object: unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return image
