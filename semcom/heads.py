"""Task heads at the receiver, on the features it decoded: classification and segmentation.

Reconstruction is always served (the decoder's image); these are added when the training data
carries labels (class subfolders, VOC segmentation labels, or the synthetic shapes set).
"""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """Decoder bottleneck (B, width, h, w) -> class logits (B, classes)."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(width, classes))

    def forward(self, bottleneck: torch.Tensor) -> torch.Tensor:
        return self.net(bottleneck)


class SegmentationHead(nn.Module):
    """Decoder's last hidden maps (B, width, H, W) -> per-pixel class logits (B, classes, H, W)."""

    def __init__(self, width: int, classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.Conv2d(width, classes, 1))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.net(hidden)
