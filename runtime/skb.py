"""SAM's "segment everything" on the exported SKB graphs: what a bundle's transmitter segments with.

The steps of segment_anything's automatic mask generator on one crop (the whole image): a grid of point
prompts, the decoder's three masks per prompt, the predicted-IoU filter, the stability filter, and box
NMS. Threshold, stability score, box and area come from lamsc.kernels' one-pass mask post-processing
(CUDA on a GPU, its torch reference elsewhere) instead of segment_anything's several passes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.ops import batched_nms

from lamsc.export.samples import point_grid, skb_image
from lamsc.kernels.mask import mask_postprocess
from lamsc.runtime.backends import Backend, spec_of
from lamsc.semcom.segmenter import MaskGenerationOptions, pad_for_sam
from lamsc.semcom.segments import Segments

SAM_PIXEL_MEAN = torch.tensor([123.675, 116.28, 103.53])  # SAM's and MobileSAM's normalisation mean
STABILITY_OFFSET = 1.0  # segment_anything's default


class GraphSamSegmenter:
    """Segment everything with the skb_encoder and skb_decoder graphs of a backend."""

    def __init__(self, backend: Backend, options: MaskGenerationOptions | None = None, source: str = ""):
        self.backend, self.options = backend, options or MaskGenerationOptions()
        self.size = spec_of(backend, "skb_encoder").inputs[0].shape[-1]
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.name = f"SAM graphs on {backend.name}" + (f" ({source})" if source else "")

    def segment(self, image: np.ndarray) -> Segments:
        padded = pad_for_sam(image, self.size)
        if padded is not image:  # a strip beyond 2048:1, as SamSegmenter does
            return self.segment(padded).crop(*image.shape[:2])
        o, h, w = self.options, *image.shape[:2]
        emb = self.backend.run("skb_encoder", {"image": skb_image(image, self.size, SAM_PIXEL_MEAN).numpy()})
        emb = emb["embeddings"]
        scale = self.size / max(h, w)
        nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
        points = point_grid(o.points_per_side, (h, w)) * scale
        kept_masks, kept_scores, kept_boxes = [], [], []
        for start in range(0, len(points), o.points_per_batch):
            pts = points[start:start + o.points_per_batch]
            out = self.backend.run("skb_decoder", {"embeddings": emb, "point_coords": pts[:, None, :],
                                                   "point_labels": np.ones((len(pts), 1), np.float32)})
            logits = torch.from_numpy(out["mask_logits"]).flatten(0, 1)
            iou = torch.from_numpy(out["iou_predictions"]).flatten()
            keep = iou > o.pred_iou_thresh
            if not keep.any():
                continue
            logits = self._upscale(logits[keep].to(self.device), (nh, nw), (h, w))
            stats = mask_postprocess(logits, 0.0, STABILITY_OFFSET)
            ok = stats.stability >= o.stability_score_thresh
            kept_masks.append(stats.masks[ok].cpu())
            kept_scores.append(iou[keep][ok.cpu()])
            kept_boxes.append(stats.boxes[ok].cpu())
        if not kept_masks or not sum(len(m) for m in kept_masks):
            return Segments(np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros((0, 4), np.int64),
                            np.zeros(0, np.int64), self.name)
        masks, scores, boxes = torch.cat(kept_masks), torch.cat(kept_scores), torch.cat(kept_boxes)
        order = batched_nms(boxes.float(), scores, torch.zeros(len(boxes)), o.box_nms_thresh)
        masks, scores, boxes = masks[order].numpy(), scores[order].numpy(), boxes[order].numpy().astype(np.int64)
        boxes[:, 2:] += 1  # inclusive ends (SAM's) to exclusive ones (ours)
        segments = Segments(masks, scores.astype(np.float32), boxes,
                            masks.reshape(len(masks), -1).sum(1).astype(np.int64), self.name)
        return segments.largest(o.max_segments)

    def _upscale(self, logits: torch.Tensor, resized: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
        """SAM's postprocess_masks: low-res logits -> encoder input size -> crop the padding -> image size."""
        x = F.interpolate(logits[:, None], (self.size, self.size), mode="bilinear", align_corners=False)
        x = x[..., : resized[0], : resized[1]]
        return F.interpolate(x, original, mode="bilinear", align_corners=False)[:, 0]
