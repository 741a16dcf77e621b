"""Compressed SKB encoders and their files: a pruned SAM/MobileSAM encoder, MobileSAM's TinyViT at a
lower input resolution, or a distilled CNN student. Each maps SAM's (B, 3, 1024, 1024) input to its
256 x 64 x 64 image embedding, so SAM's prompt encoder and mask decoder (and the mask generator) run on
it unchanged.

- ``ResNetStudent`` follows NanoSAM's route: a ResNet-18 trunk (timm, random init, trained only by
  distillation) on the image resized to ``input_size``, cut at stride 16, and a neck like SAM's.
- ``ResizedTinyViT`` runs the teacher's own TinyViT, same weights, on the image resized to
  ``input_size``: TinyViT's cost is linear in its token count (windowed attention), so 448 costs about a
  fifth of 1024, and the model starts from the teacher's function rather than from random weights.

A compressed SKB is ``NAME.safetensors`` (the whole SAM model's weights) and ``NAME.json``: the base
architecture, the encoder kind ("pruned" with its recorded shape, "resized" with its shape and input
size, or "student" with its settings) and how it was distilled. ``load_sam`` (lamsc.semcom.sam_checkpoint)
reads it like an official checkpoint.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from segment_anything.modeling.common import LayerNorm2d  # SAM's own neck norm: the student's neck is SAM's
from torch import nn
from torch.nn import functional as F

from lamsc.errors import UserError
from lamsc.semcom import architecture
from lamsc.semcom.files import honour_umask
from lamsc.semcom.sam_architecture import SamArchitecture
from lamsc.semcom.segmenter import SAM_INPUT_SIDE

FORMAT, VERSION = "lamsc-skb", 2  # v2: a resized encoder records the grid its neck runs on (neck_grid)
EMBED_DIM, GRID = 256, 64


class ResNetStudent(nn.Module):
    """(B, 3, 1024, 1024) SAM-normalised image -> (B, 256, 64, 64) embedding."""

    img_size = SAM_INPUT_SIDE

    def __init__(self, backbone: str = "resnet18", input_size: int = 768):
        super().__init__()
        import timm

        self.backbone_name, self.input_size = backbone, input_size
        self.trunk = timm.create_model(backbone, pretrained=False, features_only=True, out_indices=(3,))
        channels = self.trunk.feature_info.channels()[0]
        self.neck = nn.Sequential(nn.Conv2d(channels, EMBED_DIM, 1, bias=False), LayerNorm2d(EMBED_DIM),
                                  nn.Conv2d(EMBED_DIM, EMBED_DIM, 3, padding=1, bias=False), LayerNorm2d(EMBED_DIM))

    def forward(self, x):
        if self.input_size != x.shape[-1]:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        f = self.trunk(x)[0]
        if f.shape[-1] != GRID:
            f = F.interpolate(f, size=(GRID, GRID), mode="bilinear", align_corners=False)
        return self.neck(f)

    def settings(self) -> dict:
        return {"backbone": self.backbone_name, "input_size": self.input_size}


class ResizedTinyViT(nn.Module):
    """(B, 3, 1024, 1024) SAM-normalised image -> (B, 256, 64, 64) embedding, through MobileSAM's TinyViT
    (``encoder``, changed in place) on the image resized to ``input_size``.

    On the smaller image every token covers 1024 / input_size times as much of the scene. With
    ``scale_consistent`` the network is rescaled to match, so each layer keeps seeing the area it saw in
    the teacher: attention windows shrink by the same factor (7 -> 3, 14 -> 6 at 448), each window's
    relative-position biases are read at the teacher's nearest offset, and every spatial kernel is
    resampled onto the coarser grid (``resample_kernel``). The neck runs on the trunk's features upsampled
    to ``neck_grid`` (its kernels resampled to that grid), finer than the trunk's: the teacher's neck saw
    64 x 64. Measured on a random-weight MobileSAM at 448, cosine to the teacher before and after
    fine-tuning the neck (lamsc.compress.skb), latency as a share of the teacher's (ONNX Runtime, 2 cores):

        neck grid   28 (trunk's)   48             64 (teacher's)
        cosine      0.943          0.947 -> 0.958  0.948 -> 0.960
        latency     0.21x          0.22x          0.25x

    A plain resize scores 0.833.
    """

    img_size = SAM_INPUT_SIDE

    def __init__(self, encoder: nn.Module, input_size: int, scale_consistent: bool = True, neck_grid: int = 48):
        super().__init__()
        if not hasattr(encoder, "layers") or not hasattr(encoder, "patch_embed"):
            raise UserError("a resized SKB encoder needs MobileSAM's TinyViT; SAM's ViT has position embeddings "
                            "fixed to a 64 x 64 grid, compress it by pruning (--ratios) or a student (--students)")
        full = encoder.img_size
        check_resize(input_size, full)
        for module in encoder.modules():
            if hasattr(module, "input_resolution"):
                module.input_resolution = tuple(r * input_size // full for r in module.input_resolution)
        self.encoder, self.input_size, self.grid = encoder, input_size, input_size // 16
        self.scale_consistent = scale_consistent
        self.neck_grid = neck_grid if scale_consistent else self.grid
        if not 0 < self.neck_grid <= GRID:
            raise UserError(f"neck grid {neck_grid}: use 1 to {GRID} (the teacher's)")
        if scale_consistent:
            factor, neck = input_size / full, set(encoder.neck.modules())
            for module in encoder.modules():
                if isinstance(module, nn.Conv2d) and max(module.kernel_size) > 1:
                    on = self.neck_grid / GRID if module in neck else factor
                    if on < 1:  # the neck on the teacher's own grid keeps its kernels
                        module.weight.data = resample_kernel(module.weight.data, on)
                if hasattr(module, "window_size") and hasattr(module, "attn"):
                    _shrink_window(module, factor)

    def forward(self, x):
        return self.neck()(self.trunk(x))

    def trunk(self, x):
        """(B, 3, 1024, 1024) -> the last stage's (B, C, grid, grid) features, the input of ``neck``."""
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.encoder.patch_embed(x)
        for layer in self.encoder.layers:
            x = layer(x)
        return x.view(x.shape[0], self.grid, self.grid, x.shape[-1]).permute(0, 3, 1, 2)

    def neck(self) -> nn.Module:
        """Trunk features -> the 64 x 64 embedding: upsampled to ``neck_grid``, the neck, upsampled to 64.
        Its parameters are the encoder's own, so it is also the part fine-tuned alone, on trunk features
        computed once (lamsc.compress.skb). Built per call, not kept as a submodule, so that the neck's
        weights sit once in the state dict (the SKB file format) and not twice."""
        def up(g):
            return nn.Upsample(size=(g, g), mode="bilinear", align_corners=False)

        steps = [self.encoder.neck]
        if self.neck_grid != self.grid:
            steps.insert(0, up(self.neck_grid))
        if self.neck_grid != GRID:
            steps.append(up(GRID))
        return nn.Sequential(*steps)

    def settings(self) -> dict:
        return {"input_size": self.input_size, "scale_consistent": self.scale_consistent, "neck_grid": self.neck_grid}


def check_resize(input_size: int, full: int = SAM_INPUT_SIDE) -> None:
    """A TinyViT input size that keeps every stage's token grid whole, or a one-line UserError."""
    if input_size % 16 or not 0 < input_size < full:
        raise UserError(f"TinyViT input size {input_size}: use a multiple of 16 below {full} (448 is a fifth "
                        "of 1024's latency)")


def resample_kernel(weight: torch.Tensor, factor: float) -> torch.Tensor:
    """A convolution kernel for a grid ``factor`` (< 1) times as fine: each tap, at offset k on the original
    grid, sits at k * factor on the new one and is split bilinearly between the new taps around it.
    On a locally linear input this keeps the convolution's output (its sum and first moment are kept)."""
    kh, kw = weight.shape[-2:]
    out = torch.zeros_like(weight)
    for i in range(kh):
        for j in range(kw):
            y, x = (i - kh // 2) * factor, (j - kw // 2) * factor
            y0, x0 = math.floor(y), math.floor(x)
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if wy * wx > 0:
                        out[..., yy + kh // 2, xx + kw // 2] += wy * wx * weight[..., i, j]
    return out


def _shrink_window(block: nn.Module, factor: float) -> None:
    """A TinyViT block's attention window scaled by ``factor``, its bias table read at the nearest offset."""
    attn, old = block.attn, block.window_size
    new = max(1, round(old * factor))
    old_index = attn.attention_bias_idxs[0].view(old, old)  # row 0: offsets from window position (0, 0)
    points = list(itertools.product(range(new), range(new)))
    nearest = lambda d: min(old - 1, round(abs(d) / factor))  # noqa: E731
    idxs = [int(old_index[nearest(p[0] - q[0]), nearest(p[1] - q[1])]) for p in points for q in points]
    attn.attention_bias_idxs = torch.tensor(idxs, dtype=torch.long).view(len(points), len(points))
    block.window_size = new
    attn.train(attn.training)  # in eval mode TinyViT caches the biases gathered by the old index


def save_skb(sam: nn.Module, base: dict, encoder: dict, path: str | Path, provenance: dict | None = None) -> Path:
    """Write PATH.safetensors + PATH.json. ``base`` is the teacher's SamArchitecture as a dict; ``encoder``
    is {"kind": "pruned", "architecture": ...}, {"kind": "resized", "architecture": ..., "input_size": ...}
    (the architecture recorded before resizing) or {"kind": "student", **ResNetStudent.settings()}."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in sam.state_dict().items()},
              str(path.with_suffix(".safetensors")), metadata={"format": FORMAT})
    honour_umask(path.with_suffix(".safetensors"))
    path.with_suffix(".json").write_text(json.dumps({"format": FORMAT, "version": VERSION, "base": base,
                                                     "encoder": encoder, "provenance": provenance or {}}, indent=2))
    return path.with_suffix(".safetensors")


def is_skb_file(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix in (".safetensors", ".json") and path.with_suffix(".json").is_file()


def load_skb(path: str | Path, build):
    """(sam, SamArchitecture) from a compressed SKB; ``build(arch)`` is the official builder of the base."""
    path = Path(path).with_suffix("")
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UserError(f"{path}.json is not a lamsc compressed SKB (format {FORMAT} v{VERSION}); pass a SAM/"
                        "MobileSAM checkpoint or a file written by `lamsc compress --sam`")
    base = meta["base"]
    base["global_attn_indexes"] = tuple(base.get("global_attn_indexes", ()))
    enc = meta["encoder"]
    variant = {"pruned": "pruned", "resized": f"TinyViT at {enc.get('input_size')}",
               "student": f"{enc.get('backbone')} student"}.get(enc["kind"])
    if variant is None:
        raise UserError(f"{path}.json names an SKB encoder kind {enc['kind']!r} this lamsc does not know; "
                        "upgrade lamsc or recompress")
    variant += " (lamsc compress)"
    arch = SamArchitecture(**{**base, "variant": variant})
    weights = path.with_suffix(".safetensors")
    if not weights.is_file():
        raise UserError(f"{weights} is missing beside {path.name}.json; a compressed SKB is the pair, copy both")
    sam = build(dataclasses.replace(arch, variant=""))
    state = load_file(str(weights))
    if enc["kind"] == "student":
        sam.image_encoder = ResNetStudent(enc["backbone"], enc["input_size"])
    else:
        # a resized encoder's weights sit one level down (image_encoder.encoder.*) from the builder's names
        shapes = {k.replace("image_encoder.encoder.", "image_encoder.", 1): v for k, v in state.items()}
        architecture.apply(sam, enc["architecture"], shapes)
        if enc["kind"] == "resized":
            sam.image_encoder = ResizedTinyViT(sam.image_encoder, enc["input_size"], enc["scale_consistent"],
                                               enc["neck_grid"])
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}.safetensors does not match {path.name}.json ({str(e).splitlines()[0][:160]}); "
                        "keep the pair that was saved together") from None
    return sam.eval(), arch
