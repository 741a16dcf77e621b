"""The SAM knowledge base (SKB): one ``Segmenter`` interface over SAM, MobileSAM (lamsc.semcom.sam_segmenter,
on torch) and a weight-free fallback (lamsc.semcom.fallback, NumPy only); SAM's mask-generation settings.
lamsc.semcom.skb.build_segmenter makes the one a checkpoint (or none) names."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lamsc.errors import UserError
from lamsc.semcom.segments import Segments

if TYPE_CHECKING:
    import torch

SAM_INPUT_SIDE = 1024  # SAM (and MobileSAM) scale an image's long side to this before encoding


class Segmenter(Protocol):
    """Anything that turns an RGB uint8 (H, W, 3) image into its segments."""

    name: str

    def segment(self, image: np.ndarray) -> Segments: ...


# The least value of each count in MaskGenerationOptions (lamsc segment's flags take the same bounds)
COUNT_MINIMA = {"points_per_side": 1, "points_per_batch": 1, "min_mask_region_area": 0, "crop_n_layers": 0,
                "max_segments": 1}


@dataclass(frozen=True)
class MaskGenerationOptions:
    """Settings of SAM's "segment everything" mode (segment_anything's automatic mask generator).

    The defaults are SAM's own; LAM-SC's authors used points_per_side=32, pred_iou_thresh=0.86,
    stability_score_thresh=0.92, crop_n_layers=1, min_mask_region_area=400 and kept the 5 largest.
    """

    points_per_side: int = 32
    points_per_batch: int = 64          # prompts decoded together; memory grows with it
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    box_nms_thresh: float = 0.7
    min_mask_region_area: int = 0       # > 0 removes holes and islands smaller than this (needs OpenCV)
    crop_n_layers: int = 0
    max_segments: int | None = None     # keep only the largest this many

    def __post_init__(self) -> None:
        for name, least in COUNT_MINIMA.items():
            value = getattr(self, name)
            if value is not None and value < least:  # max_segments None: keep every segment
                raise UserError(f"{name} = {value}: give a whole number of at least {least}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MaskGenerationOptions":
        return cls(**d)


def pad_for_sam(image: np.ndarray, side: int = SAM_INPUT_SIDE) -> np.ndarray:
    """``image`` (H, W, 3) with its short side edge-padded (bottom/right) just enough that scaling its long
    side to ``side`` leaves the short side at least one pixel (SAM rounds it to zero beyond 2048:1 and fails);
    the image itself when it needs none. Segment the result, then ``Segments.crop`` back to (H, W)."""
    h, w = image.shape[:2]
    need = -(-max(h, w) // (2 * side))  # short * side / long >= 1/2 rounds to at least one pixel
    if min(h, w) >= need:
        return image
    return np.pad(image, ((0, max(0, need - h)), (0, max(0, need - w)), (0, 0)), mode="edge")


class CachedSegmenter:
    """A segmenter that segments each distinct image once: the same pixels sent at several SNRs, with and
    without ASC, or by several backends get the segments of the first call (keyed by a hash of the pixels)."""

    def __init__(self, segmenter: Segmenter):
        self.segmenter, self.name = segmenter, segmenter.name
        self._cache: dict[tuple, Segments] = {}

    def segment(self, image: np.ndarray) -> Segments:
        key = (image.shape, hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).digest())
        if key not in self._cache:
            self._cache[key] = self.segmenter.segment(image)
        return self._cache[key]


def torch_device(device: str) -> torch.device:
    """"auto" (CUDA when present, else the CPU) or a named torch device; UserError for CUDA where there is none."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but CUDA is not available here; use --device cpu")
    return torch.device(device)
