"""Segments: what a knowledge-base segmenter returns for one image, pixel-aligned with it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Segments:
    """N binary masks of one image with their scores, boxes and areas.

    masks  (N, H, W) bool, aligned with the image pixel for pixel
    scores (N,) float32, the segmenter's confidence in each mask (its meaning is the segmenter's)
    boxes  (N, 4) int64, XYXY with exclusive ends: mask[y0:y1, x0:x1] holds every pixel of the mask
    areas  (N,) int64, pixels in each mask
    segmenter: which segmenter produced them, e.g. "mobilesam vit_t (mobile_sam.pt)" or "fallback felzenszwalb"
    """

    masks: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    areas: np.ndarray
    segmenter: str

    def __post_init__(self) -> None:
        n = len(self.masks)
        if self.masks.ndim != 3 or self.masks.dtype != bool:
            raise ValueError(f"masks must be (N, H, W) bool, got {self.masks.dtype} {self.masks.shape}")
        if self.scores.shape != (n,) or self.boxes.shape != (n, 4) or self.areas.shape != (n,):
            raise ValueError("scores, boxes and areas must each have one row per mask")

    @classmethod
    def from_masks(cls, masks: np.ndarray, scores: np.ndarray, segmenter: str) -> "Segments":
        """Build from masks alone, deriving each box and area from its pixels."""
        masks = np.asarray(masks, dtype=bool)
        return cls(masks, np.asarray(scores, np.float32), mask_boxes(masks),
                   masks.reshape(len(masks), -1).sum(1).astype(np.int64), segmenter)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.masks)

    def select(self, index: np.ndarray) -> "Segments":
        return Segments(self.masks[index], self.scores[index], self.boxes[index], self.areas[index], self.segmenter)

    def largest(self, k: int | None = None) -> "Segments":
        """The k largest segments, largest first (LAM-SC keeps the top few by area)."""
        order = np.argsort(-self.areas, kind="stable")
        return self.select(order[:k] if k is not None else order)

    def crop(self, height: int, width: int) -> "Segments":
        """The segments of the image's top-left ``height`` x ``width`` (masks made on a padded copy), boxes and
        areas recomputed; masks left empty by the crop are dropped."""
        masks = self.masks[:, :height, :width]
        keep = masks.any((1, 2))
        return Segments.from_masks(masks[keep], self.scores[keep], self.segmenter)

    def summary(self) -> dict:
        """JSON-ready description (no masks)."""
        return {
            "segmenter": self.segmenter,
            "count": len(self),
            "image_size": list(self.image_size),
            "areas": self.areas.tolist(),
            "scores": [round(float(s), 4) for s in self.scores],
            "boxes_xyxy": self.boxes.tolist(),
        }


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """XYXY boxes with exclusive ends of (N, H, W) masks; an empty mask gets (0, 0, 0, 0)."""
    n = len(masks)
    boxes = np.zeros((n, 4), np.int64)
    if n == 0:
        return boxes
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    nonempty = rows.any(1)
    h, w = masks.shape[1:]
    boxes[:, 0] = cols.argmax(1)
    boxes[:, 1] = rows.argmax(1)
    boxes[:, 2] = w - cols[:, ::-1].argmax(1)
    boxes[:, 3] = h - rows[:, ::-1].argmax(1)
    boxes[~nonempty] = 0
    return boxes
