"""Attention-based semantic integration (ASI): weight the SKB's segments and integrate them into an
importance map, which with the image forms the semantic-aware image the encoder sees.

Channel attention (CBAM-style, the segments being the channels) gives each segment one weight in [0, 1];
integration is in float, as a coverage-weighted mean of the weights of the segments covering each pixel
(the authors' uint8 sum overflows where masks overlap); spatial attention then refines that map with
the image's own mean and max over colour.

"Experience" — what matters in an image — comes as an importance file per image (see
``importance_targets``) or, when none is given, from a default rule of colour contrast and border contact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lamsc.errors import UserError
from lamsc.semcom.images import load_grey

_DESCRIPTOR_SIDE = 64  # segments are described at this resolution: enough for colour and shape


class ASI(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(4, 16, 3, stride=2, padding=1), nn.GELU(),
                                  nn.Conv2d(16, hidden, 3, stride=2, padding=1), nn.GELU())
        self.mlp = nn.Sequential(nn.Linear(hidden + 3, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.spatial = nn.Conv2d(3, 1, 7, padding=3)
        with torch.no_grad():  # start as the identity on the integrated map
            self.spatial.weight.zero_()
            self.spatial.weight[0, 0, 3, 3] = 6.0
            self.spatial.bias.fill_(-3.0)

    def segment_weights(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Importance in [0, 1] of each segment: image (B, 3, H, W), masks (B, K, H, W) -> (B, K).

        Empty mask slots (padding) get weight 0.
        """
        b, k = masks.shape[:2]
        small_img = adaptive_avg_pool(image, _DESCRIPTOR_SIDE)
        small_masks = adaptive_avg_pool(masks, _DESCRIPTOR_SIDE)
        stacked = torch.cat([small_img.unsqueeze(1) * small_masks.unsqueeze(2), small_masks.unsqueeze(2)], 2)
        feats = self.stem(stacked.flatten(0, 1))  # (B*K, hidden, 16, 16)
        avg, mx = feats.mean((2, 3)), feats.amax((2, 3))
        geo = segment_geometry(masks).flatten(0, 1)
        logits = self.mlp(torch.cat([avg, geo], 1)) + self.mlp(torch.cat([mx, geo], 1))
        valid = masks.flatten(2).amax(2) > 0
        return torch.sigmoid(logits.view(b, k)) * valid

    def forward(self, image: torch.Tensor, masks: torch.Tensor):
        """-> (segment weights (B, K), integrated map (B, 1, H, W), refined importance (B, 1, H, W))."""
        weights = self.segment_weights(image, masks)
        integrated = integrate(weights, masks)
        refined = torch.sigmoid(self.spatial(torch.cat([integrated, image.mean(1, keepdim=True),
                                                        image.amax(1, keepdim=True)], 1)))
        return weights, integrated, refined


def adaptive_avg_pool(x: torch.Tensor, side: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, side)`` written as two matrix products.

    The same bins as PyTorch's (start floor(i n / side), end ceil((i + 1) n / side)), but the bins are
    computed from the input's shape inside the graph, so ONNX exports it with dynamic H and W, which
    ONNX's own pooling cannot express for arbitrary sizes.
    """
    h, w = x.shape[-2:]
    return _bin_matrix(h, side, x) @ x @ _bin_matrix(w, side, x).transpose(0, 1)


def _bin_matrix(n, side: int, like: torch.Tensor) -> torch.Tensor:
    """(side, n) averaging matrix of adaptive pooling along one axis."""
    i = torch.arange(side, device=like.device)
    start = torch.div(i * n, side, rounding_mode="floor")
    end = torch.div((i + 1) * n + side - 1, side, rounding_mode="floor")
    j = torch.arange(n, device=like.device)
    inside = ((j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])).to(like.dtype)
    return inside / inside.sum(1, keepdim=True)


def integrate(weights: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per pixel, the mean weight of the segments covering it (0 where none does): (B, 1, H, W)."""
    cover = masks.sum(1, keepdim=True)
    return (weights[..., None, None] * masks).sum(1, keepdim=True) / cover.clamp(min=1.0)


def segment_geometry(masks: torch.Tensor) -> torch.Tensor:
    """Per segment: area fraction, centroid distance from the centre (0..1), fraction of border pixels."""
    b, k, h, w = masks.shape
    # Means, not sums, over the image: pixel counts pass float16's 65504 on large images.
    area = masks.mean((2, 3))
    ys = torch.linspace(-1, 1, h, device=masks.device).view(1, 1, h, 1)
    xs = torch.linspace(-1, 1, w, device=masks.device).view(1, 1, 1, w)
    safe = area.clamp(min=1.0 / (h * w))
    cy, cx = (masks * ys).mean((2, 3)) / safe, (masks * xs).mean((2, 3)) / safe
    border = masks.new_zeros(h, w)  # from the shape alone: a model without segments passes K = 0
    border[0, :], border[-1, :], border[:, 0], border[:, -1] = 1, 1, 1, 1
    on_border = (masks * border).sum((2, 3)) / border.sum()
    return torch.stack([area, torch.sqrt((cx**2 + cy**2) / 2), on_border], -1)


def default_targets(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The rule used when no experience is given: a segment matters by colour contrast with the rest of
    the image and by not being background (touching the image border). (B, K) in [0, 1]."""
    area = masks.sum((2, 3)).clamp(min=1.0)
    mean_in = (image.unsqueeze(1) * masks.unsqueeze(2)).sum((3, 4)) / area.unsqueeze(-1)  # (B, K, 3)
    rest = (1 - masks).sum((2, 3)).clamp(min=1.0)
    mean_out = (image.unsqueeze(1) * (1 - masks).unsqueeze(2)).sum((3, 4)) / rest.unsqueeze(-1)
    contrast = (mean_in - mean_out).norm(dim=-1) / np.sqrt(3)
    contrast = contrast / contrast.amax(1, keepdim=True).clamp(min=1e-6)
    border = segment_geometry(masks)[..., 2]
    background = (border / border.amax(1, keepdim=True).clamp(min=1e-6))
    valid = masks.flatten(2).amax(2) > 0
    return (0.6 * contrast + 0.4 * (1 - background)).clamp(0, 1) * valid


def importance_targets(importance_map: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per-segment targets from an importance map (B, 1, H, W) in [0, 1]: its mean over each segment."""
    area = masks.sum((2, 3)).clamp(min=1.0)
    return (importance_map * masks).sum((2, 3)) / area


def read_importance_map(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An experience file: an 8-bit greyscale PNG the size of its image, 0 = unimportant, 255 = most.

    It lives beside the images as ``importance/<image stem>.png``; any segmentation can be scored
    against it, so one file serves SAM, MobileSAM and the fallback alike.
    """
    arr = load_grey(path).astype(np.float32) / 255.0
    if arr.shape != tuple(size):
        raise UserError(f"importance map {path} is {arr.shape[::-1]} but its image is {tuple(size)[::-1]}; "
                        "make it the image's size")
    return arr
