"""Compressed SKB encoders and their files: a pruned SAM/MobileSAM encoder or a distilled CNN student.

The student follows NanoSAM's route: a ResNet-18 trunk (timm, random init, trained only by distillation)
on the image resized to ``input_size``, cut at stride 16, and a neck to SAM's 256 x 64 x 64 image
embedding, so SAM's prompt encoder and mask decoder (and the mask generator) run on it unchanged.

A compressed SKB is ``NAME.safetensors`` (the whole SAM model's weights) and ``NAME.json``: the base
architecture, the encoder kind ("pruned" with its recorded shape, or a student with its settings) and
how it was distilled. ``load_sam`` (lamsc.semcom.sam_checkpoint) reads it like an official checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from segment_anything.modeling.common import LayerNorm2d  # SAM's own neck norm: the student's neck is SAM's
from torch import nn
from torch.nn import functional as F

from lamsc.errors import UserError
from lamsc.semcom import architecture

FORMAT, VERSION = "lamsc-skb", 1
EMBED_DIM, GRID = 256, 64


class ResNetStudent(nn.Module):
    """(B, 3, 1024, 1024) SAM-normalised image -> (B, 256, 64, 64) embedding."""

    img_size = 1024

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


def save_skb(sam: nn.Module, base: dict, encoder: dict, path: str | Path, provenance: dict | None = None) -> Path:
    """Write PATH.safetensors + PATH.json. ``base`` is the teacher's SamArchitecture as a dict; ``encoder``
    is {"kind": "pruned", "architecture": ...} or {"kind": "student", **ResNetStudent.settings()}."""
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in sam.state_dict().items()},
              str(path.with_suffix(".safetensors")), metadata={"format": FORMAT})
    path.with_suffix(".json").write_text(json.dumps({"format": FORMAT, "version": VERSION, "base": base,
                                                     "encoder": encoder, "provenance": provenance or {}}, indent=2))
    return path.with_suffix(".safetensors")


def is_skb_file(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix in (".safetensors", ".json") and path.with_suffix(".json").is_file()


def load_skb(path: str | Path, build):
    """(sam, SamArchitecture) from a compressed SKB; ``build(arch)`` is the official builder of the base."""
    from lamsc.semcom.sam_checkpoint import SamArchitecture

    path = Path(path).with_suffix("")
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UserError(f"{path}.json is not a lamsc compressed SKB (format {FORMAT} v{VERSION}); pass a SAM/"
                        "MobileSAM checkpoint or a file written by `lamsc compress --sam`")
    base = meta["base"]
    base["global_attn_indexes"] = tuple(base.get("global_attn_indexes", ()))
    enc = meta["encoder"]
    variant = ("pruned" if enc["kind"] == "pruned" else f"{enc['backbone']} student") + " (lamsc compress)"
    arch = SamArchitecture(**{**base, "variant": variant})
    weights = path.with_suffix(".safetensors")
    if not weights.is_file():
        raise UserError(f"{weights} is missing beside {path.name}.json; a compressed SKB is the pair, copy both")
    sam = build(dataclasses.replace(arch, variant=""))
    state = load_file(str(weights))
    if enc["kind"] == "student":
        sam.image_encoder = ResNetStudent(enc["backbone"], enc["input_size"])
    else:
        architecture.apply(sam, enc["architecture"], state)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}.safetensors does not match {path.name}.json ({str(e).splitlines()[0][:160]}); "
                        "keep the pair that was saved together") from None
    return sam.eval(), arch
