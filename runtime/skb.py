"""The SKB of a deployment: SAM's "segment everything" driven by the exported skb_encoder and skb_decoder
graphs, through the same mask generator as a checkpoint (lamsc.semcom.segmenter.SamSegmenter).

``GraphSamPredictor`` gives segment_anything's SamPredictor interface over a backend's graphs: the image
embedding from skb_encoder, the three multimask logits per point prompt from skb_decoder, upscaled as SAM's
``postprocess_masks`` does. Crops, quality filters, NMS and small-region removal are the generator's own.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from segment_anything.predictor import SamPredictor
from torch.nn import functional as F

from lamsc.semcom.backend import Backend
from lamsc.semcom.sam_segmenter import SamSegmenter
from lamsc.semcom.segmenter import MaskGenerationOptions

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # SAM's and MobileSAM's normalisation mean, RGB
MASK_THRESHOLD = 0.0  # SAM's mask logit threshold (Sam.mask_threshold)


class GraphSamPredictor(SamPredictor):
    """SamPredictor over a backend's skb_encoder (image (1, 3, S, S) in 0..255 -> embeddings) and
    skb_decoder (embeddings, points (N, P, 2), labels (N, P) -> mask logits (N, 3, 4e, 4e), IoUs (N, 3))."""

    def __init__(self, backend: Backend):
        size = backend.spec("skb_encoder").inputs[0].shape[-1]
        # what SamPredictor and the generator read of a Sam module
        super().__init__(SimpleNamespace(image_format="RGB", mask_threshold=MASK_THRESHOLD,
                                         image_encoder=SimpleNamespace(img_size=size), device=torch.device("cpu")))
        self.backend, self.size = backend, size

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """``transformed_image`` (1, 3, h, w) resized so its long side is S; padded with the pixel mean, which
        the graph's normalisation makes the zero padding SAM applies."""
        self.reset_image()
        self.original_size = original_image_size
        self.input_size = tuple(transformed_image.shape[-2:])
        h, w = self.input_size
        image = np.empty((1, 3, self.size, self.size), np.float32)
        image[:] = np.asarray(SAM_PIXEL_MEAN, np.float32).reshape(1, 3, 1, 1)
        image[:, :, :h, :w] = transformed_image.float().cpu().numpy()
        self.features = self.backend.run("skb_encoder", {"image": image})["embeddings"]
        self.is_image_set = True

    @torch.no_grad()
    def predict_torch(self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True,
                      return_logits=False):
        if boxes is not None or mask_input is not None or not multimask_output:
            raise ValueError("the exported SKB decoder takes point prompts and gives SAM's three multimask outputs")
        out = self.backend.run("skb_decoder", {"embeddings": self.features,
                                               "point_coords": point_coords.float().cpu().numpy(),
                                               "point_labels": point_labels.float().cpu().numpy()})
        low_res = torch.from_numpy(out["mask_logits"])
        masks = self.postprocess(low_res)
        return (masks if return_logits else masks > MASK_THRESHOLD), torch.from_numpy(out["iou_predictions"]), low_res

    def postprocess(self, low_res: torch.Tensor) -> torch.Tensor:
        """SAM's postprocess_masks: low-res logits -> the encoder's input size -> its padding cropped -> the
        image's size."""
        x = F.interpolate(low_res, (self.size, self.size), mode="bilinear", align_corners=False)
        x = x[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)


def graph_segmenter(backend: Backend, options: MaskGenerationOptions | None = None, source: str = "") -> SamSegmenter:
    """Segment everything with the SKB graphs of ``backend`` (a bundle exported with a SAM checkpoint)."""
    name = f"SAM graphs on {backend.name}" + (f" ({source})" if source else "")
    return SamSegmenter.on_predictor(GraphSamPredictor(backend), name, options)
