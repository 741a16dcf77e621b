"""The networks each endpoint runs, as graphs with plain, named tensor inputs and outputs.

The same modules run eagerly in the PyTorch backend (lamsc.semcom.backend), the reference path, and are
what lamsc.export writes to ONNX for ONNX Runtime and TensorRT.

Four graphs, exported and verified separately because they run at different places and rates:

- ``skb_encoder``: the SAM/MobileSAM image encoder (normalisation inside), fixed 1024x1024, dynamic batch;
- ``skb_decoder``: SAM's prompt encoder + mask decoder for N point prompts on one image embedding;
- ``transmitter``: ASI, the SNR-conditioned encoder and the ASC mask network, dynamic batch, H and W;
  it outputs the encoder's features before ASC masking and power normalisation, which the transmitter
  applies on the host in float32 (with or without ASC) whatever the graph's precision;
- ``receiver``: the decoder and the task heads, dynamic batch, h and w.

The ASC pack (threshold, quantise, compact) stays outside the graphs: it is the CUDA kernel in
lamsc.kernels (or its reference), run after the transmitter.
"""

from __future__ import annotations

import torch
from torch import nn

from lamsc.semcom.graph_specs import GraphSpec, TensorSpec
from lamsc.semcom.model import LamscModel


class TransmitterGraph(nn.Module):
    """image (B, 3, H, W) in [0, 1], H and W multiples of 8; SKB masks (B, K, H, W); SNR (B,) in dB
    -> features (B, C, H/8, W/8), the encoder's output before masking and power normalisation;
    depth (B, 1, H/8, W/8) in (0, 1), ASC's keep depth; importance (B, 1, H, W), ASI's map."""

    def __init__(self, model: LamscModel):
        super().__init__()
        self.model = model

    def forward(self, image, masks, snr_db):
        enc = self.model.encode(image, masks, snr_db, asc=True)
        return enc["features"], enc["depth"], enc["importance"]

    def spec(self) -> GraphSpec:
        c = self.model.config
        return GraphSpec("transmitter", (
            TensorSpec("image", "float32", ("batch", 3, "height", "width")),
            TensorSpec("masks", "float32", ("batch", c.segments, "height", "width")),
            TensorSpec("snr_db", "float32", ("batch",)),
        ), (
            TensorSpec("features", "float32", ("batch", c.channels, "feature_height", "feature_width")),
            TensorSpec("depth", "float32", ("batch", 1, "feature_height", "feature_width")),
            TensorSpec("importance", "float32", ("batch", 1, "height", "width")),
        ))

    def example(self, height: int = 256, width: int = 320) -> tuple:
        k = self.model.config.segments
        masks = torch.zeros(1, k, height, width)
        masks[:, 0, : height // 2] = 1
        return torch.rand(1, 3, height, width), masks, torch.tensor([10.0])


class ReceiverGraph(nn.Module):
    """z (B, C, h, w) with zeros where nothing arrived; levels (B, h, w) int64 in 1..L; SNR (B,)
    -> image (B, 3, 8h, 8w) and, when the model has them, class_logits (B, classes), seg_logits."""

    def __init__(self, model: LamscModel):
        super().__init__()
        self.model = model

    def forward(self, z, levels, snr_db):
        out = self.model.decode(z, levels, snr_db)
        return tuple(out[name] for name in ("image", "class_logits", "seg_logits") if name in out)

    def spec(self) -> GraphSpec:
        c = self.model.config
        outputs = [TensorSpec("image", "float32", ("batch", 3, "height", "width"))]
        if c.classes:
            outputs.append(TensorSpec("class_logits", "float32", ("batch", len(c.classes))))
        if c.seg_classes:
            outputs.append(TensorSpec("seg_logits", "float32", ("batch", c.seg_classes, "height", "width")))
        return GraphSpec("receiver", (
            TensorSpec("z", "float32", ("batch", c.channels, "feature_height", "feature_width")),
            TensorSpec("levels", "int64", ("batch", "feature_height", "feature_width")),
            TensorSpec("snr_db", "float32", ("batch",)),
        ), tuple(outputs))

    def example(self, height: int = 32, width: int = 40) -> tuple:
        c = self.model.config
        levels = torch.randint(1, c.num_levels + 1, (1, height, width))
        return torch.randn(1, c.channels, height, width), levels, torch.tensor([10.0])


class SkbEncoderGraph(nn.Module):
    """image (B, 3, S, S) RGB in 0..255, resized so its longer side is S and zero-padded at the bottom and
    right (S = 1024 for SAM and MobileSAM) -> image embeddings (B, 256, S/16, S/16).

    Normalisation happens inside; padding is applied to the *normalised* image as SAM does, so the caller
    pads the raw image with the pixel mean (``pad_value``) to get the same result.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.encoder = sam.image_encoder
        self.register_buffer("mean", sam.pixel_mean.detach().clone(), persistent=False)
        self.register_buffer("std", sam.pixel_std.detach().clone(), persistent=False)
        self.size = sam.image_encoder.img_size

    def forward(self, image):
        return self.encoder((image - self.mean) / self.std)

    def spec(self) -> GraphSpec:
        s, e = self.size, self.size // 16
        return GraphSpec("skb_encoder", (TensorSpec("image", "float32", ("batch", 3, s, s)),),
                         (TensorSpec("embeddings", "float32", ("batch", 256, e, e)),))

    def example(self) -> tuple:
        return (torch.rand(1, 3, self.size, self.size) * 255,)


class SkbDecoderGraph(nn.Module):
    """One image's embeddings (1, 256, e, e) and N point prompts (N, P, 2) in the encoder's input frame
    with labels (N, P) (1 foreground, 0 background, -1 padding) -> mask logits (N, 3, 4e, 4e) at the
    encoder's quarter resolution and predicted IoUs (N, 3): SAM's three multimask outputs.

    segment_anything's own ``predict_masks`` repeats the embeddings with ``repeat_interleave``, which
    exports as a Tile whose repeats come from a OneHot-derived shape tensor: TensorRT 8.6-10.3 refuse it
    ("IIOneHotLayer cannot be used to compute a shape tensor"). Here the embeddings are broadcast with
    ``expand`` instead, and the point embedding is computed without in-place masked writes.
    """

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.prompt = sam.prompt_encoder
        self.decoder = sam.mask_decoder
        self.size = sam.image_encoder.img_size

    def embed_points(self, coords, labels):
        pe = self.prompt.pe_layer.forward_with_coords(coords + 0.5, (self.size, self.size))
        lab = labels.unsqueeze(-1)
        pe = torch.where(lab == -1, torch.zeros_like(pe), pe)
        pe = pe + (lab == -1).float() * self.prompt.not_a_point_embed.weight
        pe = pe + (lab == 0).float() * self.prompt.point_embeddings[0].weight
        pe = pe + (lab == 1).float() * self.prompt.point_embeddings[1].weight
        return pe

    def forward(self, embeddings, point_coords, point_labels):
        d = self.decoder
        n = point_coords.shape[0]
        # SAM pads point-only prompts with one "not a point" entry; do the same.
        coords = torch.cat([point_coords, torch.zeros_like(point_coords[:, :1])], 1)
        labels = torch.cat([point_labels, -torch.ones_like(point_labels[:, :1])], 1)
        sparse = self.embed_points(coords, labels)
        tokens = torch.cat([d.iou_token.weight, d.mask_tokens.weight], 0).unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat([tokens, sparse], 1)
        dense = self.prompt.no_mask_embed.weight.reshape(1, -1, 1, 1)
        src = embeddings.expand(n, -1, -1, -1) + dense
        pos = self.prompt.get_dense_pe().expand(n, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = d.transformer(src, pos, tokens)
        iou_out, mask_out = hs[:, 0, :], hs[:, 1: 1 + d.num_mask_tokens, :]
        up = d.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = torch.stack([mlp(mask_out[:, i, :]) for i, mlp in enumerate(d.output_hypernetworks_mlps)], 1)
        b, c, h, w = up.shape
        masks = (hyper @ up.reshape(b, c, h * w)).reshape(b, -1, h, w)
        iou = d.iou_prediction_head(iou_out)
        return masks[:, 1:], iou[:, 1:]  # SAM's multimask outputs (token 0 is the single-mask output)

    def spec(self) -> GraphSpec:
        e = self.size // 16
        return GraphSpec("skb_decoder", (
            TensorSpec("embeddings", "float32", (1, 256, e, e)),
            TensorSpec("point_coords", "float32", ("prompts", "points", 2)),
            TensorSpec("point_labels", "float32", ("prompts", "points")),
        ), (
            TensorSpec("mask_logits", "float32", ("prompts", 3, 4 * e, 4 * e)),
            TensorSpec("iou_predictions", "float32", ("prompts", 3)),
        ))

    def example(self, prompts: int = 4) -> tuple:
        e = self.size // 16
        return (torch.randn(1, 256, e, e), torch.rand(prompts, 1, 2) * self.size, torch.ones(prompts, 1))


def model_graphs(model: LamscModel) -> dict[str, nn.Module]:
    return {"transmitter": TransmitterGraph(model.eval()), "receiver": ReceiverGraph(model.eval())}


def skb_graphs(sam: nn.Module) -> dict[str, nn.Module]:
    return {"skb_encoder": SkbEncoderGraph(sam.eval()), "skb_decoder": SkbDecoderGraph(sam.eval())}
