"""A classical segmenter that needs no weights: Felzenszwalb's graph merging on a downscaled copy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from lamsc.semcom.segments import Segments


@dataclass(frozen=True)
class FallbackOptions:
    """Felzenszwalb parameters, tuned on the bundled photographs to give tens of regions per image."""

    work_side: int = 256        # segment at this long side: graph merging is O(pixels), masks are upsampled
    scale: float = 300.0        # larger merges more
    sigma: float = 0.8          # pre-smoothing
    min_area_frac: float = 0.002  # smallest region, as a fraction of the image


class FallbackSegmenter:
    """Segments any image into regions with scikit-image's Felzenszwalb method; no checkpoint needed.

    Each segment's score is its colour homogeneity, 1 - (mean per-channel std / 128), in [0, 1]:
    a weight-free stand-in for SAM's predicted IoU.
    """

    def __init__(self, options: FallbackOptions | None = None):
        self.options = options or FallbackOptions()
        self.name = "fallback felzenszwalb (no checkpoint)"

    def segment(self, image: np.ndarray) -> Segments:
        from skimage.segmentation import felzenszwalb

        o = self.options
        h, w = image.shape[:2]
        s = min(1.0, o.work_side / max(h, w))
        small_size = (max(1, round(w * s)), max(1, round(h * s)))
        small = np.asarray(Image.fromarray(image).resize(small_size, Image.BILINEAR))
        labels = felzenszwalb(small, scale=o.scale, sigma=o.sigma,
                              min_size=max(1, int(o.min_area_frac * small.shape[0] * small.shape[1])))
        # Nearest-neighbour upsampling keeps every label whole and the masks aligned with the image.
        labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize((w, h), Image.NEAREST))
        n = int(labels.max()) + 1
        masks = labels[None] == np.arange(n)[:, None, None]
        keep = masks.any((1, 2))  # a sliver can vanish in the upsampling
        return Segments.from_masks(masks[keep], _homogeneity(image, labels, n)[keep], self.name)


def _homogeneity(image: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    flat = labels.ravel()
    count = np.maximum(np.bincount(flat, minlength=n), 1).astype(np.float64)
    std = np.zeros(n)
    for c in range(image.shape[2]):
        v = image[..., c].ravel().astype(np.float64)
        mean = np.bincount(flat, v, n) / count
        var = np.bincount(flat, v * v, n) / count - mean**2
        std += np.sqrt(np.maximum(var, 0.0))
    return np.clip(1.0 - std / image.shape[2] / 128.0, 0.0, 1.0).astype(np.float32)
