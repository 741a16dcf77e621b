"""Views of the same scenes seen again, made from real photographs: what a fixed edge camera or a robot
revisiting places sends over and over.

A scene is one photograph, downscaled (area filter) so its short side is ``SCENE_SIDE`` pixels. A camera looks
at it from a fixed point (the scene's centre, or a point drawn once per scene); each view is a ``view`` x
``view`` crop around that point, changed as a camera's later views change:

- shift: the crop moves by up to ``shift`` pixels each way (camera jitter, a robot stopping a little off);
- light: the whole view is scaled by a gain in [0.6, 1.4], tinted per colour channel by up to ±10% and put
  through a gamma in [0.8, 1.25] (time of day, clouds, white balance);
- occlusion: with probability ``occlusion``, one or two rectangles, 15-40% of the side each way, are covered
  by a patch of another photograph (someone or something passing in front of the camera).

Everything is drawn from a NumPy generator, so a seed gives the same sequence on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SCENE_SIDE = 256  # short side of a scene after downscaling, pixels


@dataclass(frozen=True)
class View:
    """One view of a scene: ``pixels`` (view, view, 3) uint8, the scene it shows, and how it was changed
    (``offset``: (dy, dx) of the crop from the camera's point, pixels; ``gain``; ``occluded``)."""

    pixels: np.ndarray
    scene: str
    offset: tuple[int, int]
    gain: float
    occluded: bool


def scene_image(photo: np.ndarray) -> np.ndarray:
    """A photograph (H, W, 3) uint8 downscaled so its short side is SCENE_SIDE (kept if it is smaller)."""
    h, w = photo.shape[:2]
    scale = SCENE_SIDE / min(h, w)
    if scale >= 1:
        return np.ascontiguousarray(photo)
    size = (max(SCENE_SIDE, round(w * scale)), max(SCENE_SIDE, round(h * scale)))
    return np.asarray(Image.fromarray(photo).resize(size, Image.BOX))


def scene_views(scene: np.ndarray, name: str, count: int, rng: np.random.Generator, view: int = 128,
                shift: int = 16, occlusion: float = 0.3, others: list[np.ndarray] | None = None) -> list[View]:
    """``count`` views (view x view) of ``scene`` (H, W, 3) uint8 from one camera point, shifted, relit and
    occluded as the module says; occluding patches are cut from ``others`` (photographs, any size), or from
    the scene itself turned upside down when none are given. H and W must be at least ``view + 2 * shift``."""
    h, w = scene.shape[:2]
    if min(h, w) < view + 2 * shift:
        raise ValueError(f"a {h}x{w} scene is too small for {view}-pixel views shifted by {shift}")
    cy, cx = (h - view) // 2, (w - view) // 2
    cy = int(np.clip(cy + rng.integers(-h // 8, h // 8 + 1), shift, h - view - shift))  # the camera's point
    cx = int(np.clip(cx + rng.integers(-w // 8, w // 8 + 1), shift, w - view - shift))
    views = []
    for _ in range(count):
        dy, dx = (int(v) for v in rng.integers(-shift, shift + 1, 2))
        crop = scene[cy + dy: cy + dy + view, cx + dx: cx + dx + view].astype(np.float32) / 255.0
        gain = float(rng.uniform(0.6, 1.4))
        tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        gamma = float(rng.uniform(0.8, 1.25))
        lit = np.clip(crop * gain * tint, 0, 1) ** gamma
        occluded = bool(rng.random() < occlusion)
        if occluded:
            for _ in range(int(rng.integers(1, 3))):
                lit = occlude(lit, rng, others or [scene[::-1]])
        views.append(View((lit * 255).round().astype(np.uint8), name, (dy, dx), gain, occluded))
    return views


def occlude(view: np.ndarray, rng: np.random.Generator, others: list[np.ndarray]) -> np.ndarray:
    """``view`` (s, s, 3) float in [0, 1] with one rectangle covered by a patch of a photograph from ``others``."""
    s = view.shape[0]
    ph, pw = (int(v) for v in rng.integers(int(0.15 * s), int(0.4 * s) + 1, 2))
    src = others[int(rng.integers(len(others)))]
    sy, sx = int(rng.integers(0, src.shape[0] - ph + 1)), int(rng.integers(0, src.shape[1] - pw + 1))
    y, x = int(rng.integers(0, s - ph + 1)), int(rng.integers(0, s - pw + 1))
    out = view.copy()
    out[y: y + ph, x: x + pw] = src[sy: sy + ph, sx: sx + pw, :3].astype(np.float32) / 255.0
    return out


def family(name: str) -> str:
    """The family of a photograph's file name: its first word, lower-cased ("Elephants_3840x2160.jpg" and
    "Elephants.jpg" are one family, as are "Ubuntu-Mate-Cold" and "Ubuntu-Mate-Warm"). Photographs of one
    family are one scene for splitting purposes: a scene must not sit on both sides of a split."""
    stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    return stem.replace("-", "_").split("_")[0].lower()


def split_families(names: list[str], parts: list[int], seed: int = 0) -> list[list[str]]:
    """``names`` (photograph names) in ``len(parts)`` disjoint groups of whole families: one name per family,
    its first in sorted order, the families shuffled by ``seed``; group i takes the next ``parts[i]``. Raises
    ValueError when there are fewer families than the parts ask for."""
    first: dict[str, str] = {}
    for n in sorted(names):
        first.setdefault(family(n), n)
    order = [first[f] for f in sorted(first)]
    np.random.default_rng(seed).shuffle(order)
    if sum(parts) > len(order):
        raise ValueError(f"{len(order)} photograph families cannot fill groups of {parts}")
    out, at = [], 0
    for p in parts:
        out.append(order[at: at + p])
        at += p
    return out
