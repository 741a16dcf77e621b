"""Load SAM (ViT-B/L/H) and MobileSAM (TinyViT, vit_t) from their official checkpoint files.

The architecture is read off the tensors in the file, so a checkpoint is never built into the wrong model:
a named ``model_type`` must agree with the file, and ``auto`` takes what the file holds (a pruned or tiny
SAM-architecture model included). Files load with ``weights_only=True``: no code runs from a checkpoint.
"""

from __future__ import annotations

import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from lamsc.errors import UserError

# The official image-encoder shapes (segment_anything/build_sam.py): dim, depth, heads, global blocks.
SAM_VIT_TYPES = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
MODEL_TYPES = ("vit_t", *SAM_VIT_TYPES)
_GRID = 1024 // 16  # SAM's token grid; a global-attention block's relative positions span 2 * 64 - 1


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, or a one-line UserError saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass the .pth/.pt file of SAM ({', '.join(SAM_VIT_TYPES)}) "
                        "or MobileSAM (vit_t)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"{path} holds objects that safe loading refuses ({str(e).splitlines()[0]}); "
                        "re-save it as a plain state dict of tensors") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({str(e).splitlines()[0]}); "
                        "the file may be truncated: download it again") from None
    for key in ("model", "state_dict"):  # checkpoints saved by training scripts wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} is not a state dict of tensors; pass an official SAM or MobileSAM checkpoint")
    return obj


def infer_architecture(state_dict: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> SamArchitecture:
    """Read the image-encoder architecture off the tensor names and shapes."""
    keys = state_dict.keys()
    if not any(k.startswith("mask_decoder.") for k in keys):
        raise UserError(f"{path} has no SAM mask decoder; it is not a SAM or MobileSAM checkpoint")
    if any(k.startswith("image_encoder.layers.") for k in keys):
        return SamArchitecture("mobilesam")
    if "image_encoder.patch_embed.proj.weight" not in state_dict:
        raise UserError(f"{path} has an image encoder that is neither SAM's ViT nor MobileSAM's TinyViT")
    dim = state_dict["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("image_encoder.blocks."))
    head_dims, global_blocks = set(), []
    for i in range(depth):
        rel = state_dict.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if rel is None:
            raise UserError(f"{path}: block {i} has no relative positional embedding; "
                            "SAM's encoder needs one in every block")
        head_dims.add(rel.shape[1])
        if rel.shape[0] == 2 * _GRID - 1:
            global_blocks.append(i)
    if len(head_dims) != 1:
        raise UserError(f"{path}: blocks disagree on the head size {sorted(head_dims)}; "
                        "lamsc loads SAM encoders with one head size throughout")
    return SamArchitecture("sam", dim, depth, dim // head_dims.pop(), tuple(global_blocks))


def load_sam(path: str | Path, model_type: str = "auto") -> tuple[torch.nn.Module, SamArchitecture]:
    """Build the model a SAM/MobileSAM checkpoint holds with the official builders and load its weights.

    ``model_type`` is "auto" or one of vit_t, vit_b, vit_l, vit_h; a named type must match the file.
    """
    if model_type != "auto" and model_type not in MODEL_TYPES:
        raise UserError(f"unknown model type {model_type!r}; choose auto or one of {', '.join(MODEL_TYPES)}")
    from lamsc.semcom.skb_student import is_skb_file, load_skb

    if is_skb_file(path):  # compressed by lamsc: safetensors + JSON, built from its base architecture
        return load_skb(path, _build)
    state_dict = read_state_dict(path)
    arch = infer_architecture(state_dict, path)
    if model_type != "auto" and model_type != arch.model_type:
        fits = "auto" if arch.model_type == "custom" else f"{arch.model_type} (or auto)"
        raise UserError(f"{path} is a {arch.describe()} checkpoint, not {model_type}; use --model-type {fits}")
    model = _build(arch)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise UserError(f"{path} does not fit the {arch.describe()} it claims to be ({first[:200]}); "
                        "pass an unmodified official checkpoint") from None
    return model.eval(), arch


def _build(arch: SamArchitecture) -> torch.nn.Module:
    if arch.family == "mobilesam":
        return mobile_sam().build_sam_vit_t(checkpoint=None)
    # _build_sam is the official builder behind build_sam_vit_b/l/h; it takes the encoder shape directly.
    from segment_anything.build_sam import _build_sam

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
