"""Clients' photographs: non-IID folders, the held-out part of each, and domain shifts the default model never saw.

Non-IID here means each client holds a different kind of photograph: ``partition_by_content`` deals one
collection out by brightness (the darkest photographs to one client, the brightest to another), and
``DOMAIN_SHIFTS`` alter a client's photographs as its camera or conditions would (a night-like gamma with a blue
cast, a warm colour cast, a defocus blur, a thermal camera's false colours) so that they differ from what the
shipped model was trained on.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from lamsc.errors import UserError
from lamsc.semcom.images import LUMA, NamedImage

HELD_OUT_EVERY = 4  # every 4th photograph of a client (by name) is held out for its metrics


def night(pixels: np.ndarray) -> np.ndarray:
    """Gamma 2.2 darkening with a blue cast: a photograph as a dim night-time sensor gives it."""
    x = (pixels.astype(np.float32) / 255.0) ** 2.2 * np.array([0.75, 0.85, 1.1], np.float32)
    return (x.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def warm(pixels: np.ndarray) -> np.ndarray:
    """A strong warm (sepia-like) colour cast with lowered contrast."""
    x = pixels.astype(np.float32) / 255.0
    grey = x.mean(2, keepdims=True)
    x = 0.35 * x + 0.65 * grey * np.array([1.25, 1.0, 0.6], np.float32) + 0.08
    return (x.clip(0, 1) * 255 + 0.5).astype(np.uint8)


def blur(pixels: np.ndarray) -> np.ndarray:
    """A defocus blur (Gaussian, radius 2.5 pixels)."""
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2.5)))


def thermal(palette: str):
    """A thermal camera's picture of the scene: the photograph's luminance (Rec. 601) as the temperature, shown
    through a false-colour ``palette`` (a Matplotlib colormap: "inferno" is the ironbow look, "turbo" the
    rainbow one). Colours then follow one curve through RGB, unlike any photograph the model was trained on."""
    def shift(pixels: np.ndarray) -> np.ndarray:
        from matplotlib import colormaps

        lum = (pixels.astype(np.float32) @ np.array(LUMA, np.float32)) / 255.0
        return (colormaps[palette](lum)[..., :3] * 255 + 0.5).astype(np.uint8)
    return shift


DOMAIN_SHIFTS = {"none": lambda p: p, "night": night, "warm": warm, "blur": blur,
                 "thermal-ironbow": thermal("inferno"), "thermal-rainbow": thermal("turbo")}


def shifted(images: list[NamedImage], shift: str) -> list[NamedImage]:
    if shift not in DOMAIN_SHIFTS:
        raise UserError(f"unknown domain shift {shift!r}; choose one of {', '.join(DOMAIN_SHIFTS)}")
    return [replace(i, pixels=np.ascontiguousarray(DOMAIN_SHIFTS[shift](i.pixels))) for i in images]


def held_out(images: list[NamedImage], every: int = HELD_OUT_EVERY) -> tuple[list[NamedImage], list[NamedImage]]:
    """(training, held-out): every ``every``-th image in name order is held out (at least one of each when
    there are two or more). Raises UserError for fewer than two images."""
    if len(images) < 2:
        raise UserError(f"a client needs at least 2 images (training and held-out), it has {len(images)}; "
                        "add photographs to its folder")
    ordered = sorted(images, key=lambda i: i.name)
    test = [i for n, i in enumerate(ordered) if n % every == every - 1] or ordered[-1:]
    names = {i.name for i in test}
    return [i for i in ordered if i.name not in names], test


def partition_by_content(images: list[NamedImage], clients: int) -> list[list[NamedImage]]:
    """Deal ``images`` out to ``clients`` by mean brightness: client 0 the darkest share, the last the brightest
    (contiguous, near-equal shares). Raises UserError when there are fewer than 2 images per client."""
    if len(images) < 2 * clients:
        raise UserError(f"{len(images)} images cannot give {clients} clients two each; add images or fewer --clients")
    order = sorted(images, key=lambda i: (float(i.pixels.mean()), i.name))
    return [list(part) for part in np.array_split(np.array(order, dtype=object), clients)]


def resized(images: list[NamedImage], side: int) -> list[NamedImage]:
    """Each image scaled (Lanczos) so its longer side is ``side`` pixels (smaller ones are kept)."""
    out = []
    for i in images:
        h, w = i.pixels.shape[:2]
        scale = side / max(h, w)
        if scale < 1:
            size = (max(8, round(w * scale)), max(8, round(h * scale)))
            i = replace(i, pixels=np.asarray(Image.fromarray(i.pixels).resize(size, Image.LANCZOS)))
        out.append(i)
    return out


def write_folder(images: list[NamedImage], folder: Path) -> Path:
    """Write ``images`` as PNGs into ``folder`` (class folders where a name is ``class/stem``)."""
    for i in images:
        path = Path(folder) / f"{i.name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(i.pixels).save(path)
    return Path(folder)
