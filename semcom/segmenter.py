"""The SAM knowledge base (SKB): one ``Segmenter`` interface over SAM, MobileSAM and a weight-free fallback."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator

from lamsc.errors import UserError
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.sam_architecture import SAM_INPUT_SIDE, SamArchitecture, mobile_sam
from lamsc.semcom.sam_checkpoint import load_sam
from lamsc.semcom.segments import Segments


class Segmenter(Protocol):
    """Anything that turns an RGB uint8 (H, W, 3) image into its segments."""

    name: str

    def segment(self, image: np.ndarray) -> Segments: ...


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


class SamSegmenter:
    """Segment everything with SAM's own automatic mask generator (segment_anything's, or MobileSAM's for
    its models): the one mask-generation routine, whether the networks are a checkpoint's modules (this
    constructor) or a deployment's exported graphs (``SamSegmenter.on_predictor`` with
    lamsc.runtime.skb's predictor)."""

    def __init__(self, model: torch.nn.Module, arch: SamArchitecture, source: str = "",
                 options: MaskGenerationOptions | None = None, device: str = "auto"):
        self.options = options or MaskGenerationOptions()
        self.device = torch_device(device)
        self.model = model.to(self.device)
        self.arch = arch
        self.name = f"{arch.describe()}" + (f" from {source}" if source else "")
        self._generator = mask_generator(self.model, self.options, arch.family)

    @classmethod
    def on_predictor(cls, predictor, name: str, options: MaskGenerationOptions | None = None) -> "SamSegmenter":
        """SAM's mask generation driven by ``predictor``: anything with segment_anything's SamPredictor
        interface (``set_image``, ``predict_torch``, ``reset_image``, ``transform``, ``device``, ``model``)."""
        self = cls.__new__(cls)
        self.options, self.name = options or MaskGenerationOptions(), name
        self.model, self.arch, self.device = None, None, predictor.device
        self._generator = mask_generator(predictor.model, self.options, "sam")
        self._generator.predictor = predictor
        return self

    @torch.inference_mode()
    def segment(self, image: np.ndarray) -> Segments:
        """Segments of an RGB uint8 (H, W, 3) image of any size from 1 x 1 pixel up (strips beyond 2048:1 are
        segmented edge-padded, see ``pad_for_sam``)."""
        padded = pad_for_sam(image, self._generator.predictor.transform.target_length)
        if padded is not image:
            return self.segment(padded).crop(*image.shape[:2])
        records = self._generator.generate(image)
        h, w = image.shape[:2]
        if not records:
            return Segments(np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros((0, 4), np.int64),
                            np.zeros(0, np.int64), self.name)
        masks = np.stack([r["segmentation"] for r in records]).astype(bool)
        areas = np.array([r["area"] for r in records], np.int64)
        # SAM's boxes are XYWH with w = last column - first column; ours are XYXY with exclusive ends.
        xywh = np.array([r["bbox"] for r in records], np.int64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:] + 1], axis=1)
        boxes[areas == 0] = 0
        scores = np.array([r["predicted_iou"] for r in records], np.float32)
        segments = Segments(masks, scores, boxes, areas, self.name)
        return segments.largest(self.options.max_segments)


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


def mask_generator(model, options: MaskGenerationOptions, family: str = "sam"):
    """The package's SamAutomaticMaskGenerator for ``model`` with ``options`` (MobileSAM's for its family)."""
    generator = mobile_sam().SamAutomaticMaskGenerator if family == "mobilesam" else SamAutomaticMaskGenerator
    o = options
    return generator(
        model, points_per_side=o.points_per_side, points_per_batch=o.points_per_batch,
        pred_iou_thresh=o.pred_iou_thresh, stability_score_thresh=o.stability_score_thresh,
        box_nms_thresh=o.box_nms_thresh, min_mask_region_area=o.min_mask_region_area,
        crop_n_layers=o.crop_n_layers, output_mode="binary_mask")


def build_segmenter(checkpoint: str | Path | None = None, model_type: str = "auto",
                    options: MaskGenerationOptions | None = None, device: str = "auto") -> Segmenter:
    """SAM/MobileSAM from ``checkpoint`` when one is named, otherwise the weight-free fallback."""
    if checkpoint is None:
        if model_type not in ("auto", None):
            raise UserError(f"--model-type {model_type} needs a --checkpoint file to load it from")
        return FallbackSegmenter()
    model, arch = load_sam(checkpoint, model_type)
    return SamSegmenter(model, arch, Path(checkpoint).name, options, device)


def torch_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but CUDA is not available here; use --device cpu")
    return torch.device(device)
