"""Pictures people look at: segments drawn over their image, and a contact sheet of several."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lamsc.semcom.segments import Segments


# zlib level of every picture written: level 1 encodes about 4x faster than Pillow's default 6 for files
# about 1.3x larger, and a transmitted photograph is written twice per SNR.
PNG_LEVEL = 1


def save_png(picture: Image.Image | np.ndarray, path: str | Path) -> Path:
    """Write a picture (PIL image, or uint8 array (H, W, 3)) as PNG at ``PNG_LEVEL``; returns the path."""
    picture = Image.fromarray(picture) if isinstance(picture, np.ndarray) else picture
    picture.save(path, "PNG", compress_level=PNG_LEVEL)
    return Path(path)


def segment_colours(n: int, seed: int = 0) -> np.ndarray:
    """n distinct, saturated RGB colours (golden-ratio hue steps), uint8 (n, 3)."""
    import colorsys

    hues = (seed * 0.1 + np.arange(n) * 0.618033988749895) % 1.0
    rgb = np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]).reshape(-1, 3)
    return (rgb * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, segments: Segments, alpha: float = 0.5) -> Image.Image:
    """The image with each segment tinted in its own colour and its box outlined, largest drawn first."""
    out = image.astype(np.float32).copy()
    colours = segment_colours(len(segments))
    order = np.argsort(-segments.areas, kind="stable")  # small segments stay visible on top of large ones
    for i in order:
        m = segments.masks[i]
        out[m] = (1 - alpha) * out[m] + alpha * colours[i]
    picture = Image.fromarray(out.round().clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for i in order:
        x0, y0, x1, y1 = (int(v) for v in segments.boxes[i])
        if x1 > x0 and y1 > y0:
            draw.rectangle((x0, y0, x1 - 1, y1 - 1), outline=tuple(int(c) for c in colours[i]), width=2)
    return picture


def contact_sheet(pictures: list[Image.Image], captions: list[str], path: str | Path, cell: int = 320,
                  cols: int = 4, title: str = "") -> Path:
    """Tile pictures (scaled to fit a cell, captioned) into one PNG, ``cols`` to a row, under ``title``."""
    cols = min(cols, max(1, len(pictures)))
    rows = -(-len(pictures) // cols)
    top = 24 if title else 0
    sheet = Image.new("RGB", (cols * cell, top + rows * (cell + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 6), title, fill="black")
    for k, (pic, caption) in enumerate(zip(pictures, captions)):
        thumb = pic.copy()
        thumb.thumbnail((cell, cell))
        x, y = (k % cols) * cell, top + (k // cols) * (cell + 18)
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 4, y + cell + 2), caption, fill="black")
    return save_png(sheet, path)
