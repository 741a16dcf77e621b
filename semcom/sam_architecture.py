"""What a SAM or MobileSAM model is (its architecture, read from a checkpoint's tensors) and how the official
packages build one: the base the checkpoint loader and the compressed SKB students both build on."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from segment_anything.build_sam import _build_sam

# The official image-encoder shapes (segment_anything/build_sam.py): dim, depth, heads, global blocks.
SAM_VIT_TYPES = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
MODEL_TYPES = ("vit_t", *SAM_VIT_TYPES)


@dataclass(frozen=True)
class SamArchitecture:
    """What a checkpoint's tensors say it is."""

    family: str                 # "sam" (segment_anything ViT) or "mobilesam" (mobile_sam TinyViT)
    embed_dim: int = 0
    depth: int = 0
    num_heads: int = 0
    global_attn_indexes: tuple[int, ...] = ()
    variant: str = ""           # "" for an official-shape model; "pruned ...", "resnet18 student ..." otherwise

    @property
    def model_type(self) -> str:
        """The official type this architecture is, or "custom" (pruned, tiny, ...)."""
        if self.family == "mobilesam":
            return "vit_t"
        for name, spec in SAM_VIT_TYPES.items():
            if spec == (self.embed_dim, self.depth, self.num_heads, self.global_attn_indexes):
                return name
        return "custom"

    def describe(self) -> str:
        if self.family == "mobilesam":
            return "MobileSAM vit_t (TinyViT)" + (f", {self.variant}" if self.variant else "")
        what = self.model_type if self.model_type != "custom" else "custom ViT"
        return (f"SAM {what} (dim {self.embed_dim}, depth {self.depth}, {self.num_heads} heads)"
                + (f", {self.variant}" if self.variant else ""))


def build_sam(arch: SamArchitecture) -> torch.nn.Module:
    """An untrained SAM/MobileSAM of ``arch``'s shape, by the official builders."""
    if arch.family == "mobilesam":
        return mobile_sam().build_sam_vit_t(checkpoint=None)
    # _build_sam is the official builder behind build_sam_vit_b/l/h; it takes the encoder shape directly.
    return _build_sam(encoder_embed_dim=arch.embed_dim, encoder_depth=arch.depth,
                      encoder_num_heads=arch.num_heads,
                      encoder_global_attn_indexes=list(arch.global_attn_indexes), checkpoint=None)


def mobile_sam():
    """The mobile_sam package, imported without the timm deprecation noise its TinyViT module makes."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
        warnings.filterwarnings("ignore", message="Overwriting tiny_vit")
        import mobile_sam

    return mobile_sam
