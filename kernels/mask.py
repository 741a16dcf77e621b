"""SAM mask post-processing: the one-pass CUDA kernel (mask_postprocess.cu) or its torch reference."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lamsc.kernels.loader import check, library, stream_of


@dataclass
class MaskStats:
    masks: torch.Tensor       # (N, H, W) bool: logits > threshold
    areas: torch.Tensor       # (N,) int32
    stability: torch.Tensor   # (N,) float32: IoU of the masks at threshold +- offset (SAM's stability score)
    boxes: torch.Tensor       # (N, 4) int32 XYXY, inclusive ends, [0, 0, 0, 0] for an empty mask (SAM's boxes)
    backend: str


def mask_postprocess_ref(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> MaskStats:
    """The several-pass torch path the kernel replaces."""
    masks = logits > threshold
    inter = (logits > threshold + offset).flatten(1).sum(1)
    union = (logits > threshold - offset).flatten(1).sum(1)
    n, h, w = logits.shape
    rows, cols = masks.any(2), masks.any(1)
    ar_h, ar_w = torch.arange(h, device=logits.device), torch.arange(w, device=logits.device)
    y0 = torch.where(rows, ar_h, h).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1)
    x0 = torch.where(cols, ar_w, w).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1)
    boxes[~rows.any(1)] = 0
    return MaskStats(masks, masks.flatten(1).sum(1).int(), inter.float() / union.float(), boxes.int(), "reference")


def mask_postprocess(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> MaskStats:
    """Threshold, stability score, box and area of each of N mask logits (N, H, W) in one pass."""
    lib = library() if logits.is_cuda else None
    if lib is None:
        return mask_postprocess_ref(logits, threshold, offset)
    n, h, w = logits.shape
    x = logits.detach().float().contiguous()
    masks = torch.empty(n, h, w, dtype=torch.uint8, device=x.device)
    areas, inter, union = (torch.empty(n, dtype=torch.int32, device=x.device) for _ in range(3))
    boxes = torch.empty(n, 4, dtype=torch.int32, device=x.device)
    check(lib.lamsc_mask_postprocess(x.data_ptr(), n, h, w, threshold, offset, masks.data_ptr(), areas.data_ptr(),
                                     inter.data_ptr(), union.data_ptr(), boxes.data_ptr(), stream_of(x)),
          "lamsc_mask_postprocess")
    return MaskStats(masks.bool(), areas, inter.float() / union.float(), boxes, "cuda")
