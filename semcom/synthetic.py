"""A small labelled synthetic set for tests and the heads: one shape per image on a textured background,
its class (circle, square, triangle) and its segmentation mask (0 background, 1 + class inside)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lamsc.semcom.images import NamedImage

SHAPE_CLASSES = ("circle", "square", "triangle")


def make_shapes(count: int, size: int = 64, seed: int = 0) -> list[NamedImage]:
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(count):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        back = c0 * (1 - t) + c1 * t + rng.normal(0, 6, (size, size, 3))
        img = Image.fromarray(back.clip(0, 255).astype(np.uint8))
        lab = Image.new("L", (size, size), 0)
        r = rng.uniform(0.18, 0.32) * size
        cx, cy = rng.uniform(r, size - r, 2)
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        for canvas, fill in ((ImageDraw.Draw(img), colour), (ImageDraw.Draw(lab), cls + 1)):
            if cls == 0:
                canvas.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
            elif cls == 1:
                canvas.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
            else:
                canvas.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        out.append(NamedImage(f"shape{i:04d}", np.asarray(img).copy(), np.asarray(lab).copy(), cls))
    return out
