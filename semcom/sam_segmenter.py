"""SAM's "segment everything" on torch: segment_anything's automatic mask generator (MobileSAM's for its
models), the one mask-generation routine, whether the networks are a checkpoint's modules or a deployment's
exported graphs (lamsc.runtime.skb)."""

from __future__ import annotations

import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator

from lamsc.semcom.sam_architecture import SamArchitecture, mobile_sam
from lamsc.semcom.segmenter import MaskGenerationOptions, pad_for_sam, torch_device
from lamsc.semcom.segments import Segments


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


def mask_generator(model, options: MaskGenerationOptions, family: str = "sam"):
    """The package's SamAutomaticMaskGenerator for ``model`` with ``options`` (MobileSAM's for its family)."""
    generator = mobile_sam().SamAutomaticMaskGenerator if family == "mobilesam" else SamAutomaticMaskGenerator
    o = options
    return generator(
        model, points_per_side=o.points_per_side, points_per_batch=o.points_per_batch,
        pred_iou_thresh=o.pred_iou_thresh, stability_score_thresh=o.stability_score_thresh,
        box_nms_thresh=o.box_nms_thresh, min_mask_region_area=o.min_mask_region_area,
        crop_n_layers=o.crop_n_layers, output_mode="binary_mask")
