"""Real inputs for each graph, made from photographs: what verification and INT8 calibration run on."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lamsc.semcom.asc_levels import sent_levels
from lamsc.semcom.graphs import SkbEncoderGraph
from lamsc.semcom.images import NamedImage
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.transmission import model_inputs

SNR_POINTS = 5  # calibration spans the model's SNR range in this many steps: FiLM scales depend on it


def model_samples(model: LamscModel, segmenter: Segmenter, images: list[NamedImage]) -> dict[str, list[tuple]]:
    """Per graph, one input tuple per photograph: the transmitter's (image, masks, SNR) and the receiver's
    (z, levels, SNR) from running the PyTorch transmitter on them."""
    tx, rx = [], []
    snrs = np.linspace(*model.config.snr_range, SNR_POINTS)
    for i, item in enumerate(images):
        x, masks = map(torch.from_numpy, model_inputs(item.pixels, segmenter.segment(item.pixels),
                                                      model.config.segments))
        snr = torch.tensor([snrs[i % SNR_POINTS]], dtype=torch.float32)
        with torch.no_grad():
            enc = model.encode(x, masks, snr)
        tx.append((x, masks, snr))
        levels = torch.from_numpy(sent_levels(enc["depth"][:, 0], model.config.num_levels))
        rx.append((model.with_levels(enc, levels)["z"], levels, snr))
    return {"transmitter": tx, "receiver": rx}


def skb_image(pixels: np.ndarray, size: int, mean: torch.Tensor) -> torch.Tensor:
    """SAM's preprocessing before normalisation: longest side to ``size`` (bilinear, as SAM's
    ResizeLongestSide), padded at the bottom/right with the pixel mean (zero after normalisation)."""
    h, w = pixels.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))  # a strip beyond 2048:1 keeps a row
    resized = np.asarray(Image.fromarray(pixels).resize((nw, nh), Image.BILINEAR), np.float32)
    out = mean.view(3, 1, 1).expand(3, size, size).clone()
    out[:, :nh, :nw] = torch.from_numpy(resized).permute(2, 0, 1)
    return out[None]


def point_grid(n_per_side: int, size: tuple[int, int]) -> np.ndarray:
    """SAM's segment-everything prompts: an n x n grid of cell centres over an image of (H, W), as (x, y)."""
    offset = 1 / (2 * n_per_side)
    ticks = np.linspace(offset, 1 - offset, n_per_side)
    xs, ys = np.meshgrid(ticks, ticks)
    return np.stack([xs.ravel() * size[1], ys.ravel() * size[0]], 1).astype(np.float32)


def skb_samples(encoder: SkbEncoderGraph, images: list[NamedImage], prompts: int = 16) -> dict[str, list[tuple]]:
    """Encoder inputs from the photographs and decoder inputs from their embeddings with grid prompts."""
    enc, dec = [], []
    side = int(np.sqrt(prompts))
    for item in images:
        x = skb_image(item.pixels, encoder.size, encoder.mean)
        with torch.no_grad():
            emb = encoder(x)
        h, w = item.pixels.shape[:2]
        scale = encoder.size / max(h, w)
        pts = torch.from_numpy(point_grid(side, (h, w)) * scale)[:, None, :]
        enc.append((x,))
        dec.append((emb, pts, torch.ones(len(pts), 1)))
    return {"skb_encoder": enc, "skb_decoder": dec}
