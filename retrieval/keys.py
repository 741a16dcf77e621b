"""The semantic key of an image: what the receiver can compute from what it decoded, to look entries up by.

The key is a thumbnail: the image averaged down to ``KEY_SIDE`` x ``KEY_SIDE`` (area filter), each colour
channel made zero-mean and unit-variance, the whole flattened to ``KEY_DIM`` values and scaled to unit L2
norm. The area filter keeps what survives a noisy channel (the coarse layout and colours) and drops what does
not (texture, noise); per-channel normalisation makes a view under other light (a gain, a tint) key like the
same view in daylight. Unit norm makes squared L2 distance 2 - 2 cos, so distances lie in [0, 4].
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

KEY_KIND = "thumbnail-area-16-rgb-standardised"  # names the recipe in every base's manifest
KEY_SIDE = 16
KEY_DIM = 3 * KEY_SIDE * KEY_SIDE


def image_key(image: np.ndarray) -> np.ndarray:
    """The key of one image (H, W, 3) uint8 (H, W >= KEY_SIDE) -> (KEY_DIM,) float32 of unit norm."""
    return image_keys(image[None])[0]


def image_keys(images: np.ndarray) -> np.ndarray:
    """Keys of a batch (N, H, W, 3) uint8 -> (N, KEY_DIM) float32, each of unit norm."""
    x = torch.from_numpy(np.require(images, np.uint8, ["C", "W"]))  # copies read-only arrays
    x = x.permute(0, 3, 1, 2).float().div(255.0)
    t = F.adaptive_avg_pool2d(x, KEY_SIDE)
    t = t - t.mean((2, 3), keepdim=True)
    t = t / (t.std((2, 3), keepdim=True) + 1e-3)  # a flat channel stays near zero instead of blowing up
    t = t.flatten(1)
    return F.normalize(t, dim=1).numpy().astype(np.float32)
