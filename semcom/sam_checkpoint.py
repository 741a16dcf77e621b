"""Load SAM (ViT-B/L/H) and MobileSAM (TinyViT, vit_t) from their official checkpoint files.

The architecture is read off the tensors in the file, so a checkpoint is never built into the wrong model:
a named ``model_type`` must agree with the file, and ``auto`` takes what the file holds (a pruned or tiny
SAM-architecture model included). Files load with ``weights_only=True``: no code runs from a checkpoint.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch

from lamsc.errors import UserError
from lamsc.semcom.sam_architecture import MODEL_TYPES, SAM_VIT_TYPES, SamArchitecture, build_sam
from lamsc.semcom.segmenter import SAM_INPUT_SIDE
from lamsc.semcom.skb_student import is_skb_file, load_skb

log = logging.getLogger(__name__)
_GRID = SAM_INPUT_SIDE // 16  # SAM's token grid; a global-attention block's relative positions span 2 * 64 - 1


# Where training tools put a model's weights inside a checkpoint file, tried in this order: PyTorch
# Lightning and most scripts ("state_dict"), the PyTorch tutorials ("model_state_dict"), SAM's and
# MobileSAM's own fine-tuning scripts, timm and detectron2 ("model"), DeepSpeed ("module"), others ("net").
_NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
# Key components wrappers add in front of every tensor name, and who adds them.
_WRAPPERS = {
    "module": "DataParallel / DistributedDataParallel",
    "_orig_mod": "torch.compile",
    "model": "a LightningModule or other training module holding it as `model`",
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a SAM/MobileSAM checkpoint file, unwrapped, or a one-line UserError saying what is wrong.

    PyTorch files load with ``weights_only=True`` (argparse.Namespace, which timm and many scripts save beside the
    weights, is allowed: it is plain data). What training tools wrap around the weights is removed, and
    a note on stderr says what: a dict nesting them (under one of ``_NESTING_KEYS``), DataParallel/DDP's
    ``module.``, torch.compile's ``_orig_mod.`` and any other prefix shared by every key of the model (a
    Lightning module's ``model.``); see ``unwrap_state_dict``. A .safetensors file of the same tensors loads too.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}; pass the .pth/.pt file of SAM ({', '.join(SAM_VIT_TYPES)}) "
                        "or MobileSAM (vit_t)")
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            obj = load_file(path)
        else:
            with _safe_extras():
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a bad file makes the unpickler raise anything; each becomes one line
        raise _unloadable(path, e) from None
    return unwrap_state_dict(obj, path)


def unwrap_state_dict(obj, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The SAM state dict inside whatever ``torch.load`` returned: nesting dicts and key prefixes removed
    (each removal logged as a note), or a one-line UserError naming what was found and the fix."""
    found = []
    while isinstance(obj, dict) and not _all_tensors(obj):
        key = next((k for k in _NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj, found = obj[key], found + [key]
    if not isinstance(obj, dict) or not obj or not _all_tensors(obj):
        where = f" (inside its {' -> '.join(repr(k) for k in found)} entry)" if found else ""
        names = ", ".join(repr(k) for k in list(obj)[:6]) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{path} is not a state dict of tensors{where}: it holds {names or 'nothing'}; pass an "
                        "official SAM or MobileSAM checkpoint, or save the model's state_dict() alone")
    if found:
        log.info(f"{path}: took the weights from its {' -> '.join(repr(k) for k in found)} entry "
                 "(a training checkpoint)")
    state_dict = dict(obj)
    if any("_orig_mod" in k.split(".") for k in state_dict):
        state_dict = {".".join(c for c in k.split(".") if c != "_orig_mod"): v for k, v in state_dict.items()}
        log.info(f"{path}: removed torch.compile's '_orig_mod.' from its keys")
    prefixes = sorted({_before(k, "mask_decoder") for k in state_dict} - {None})
    if len(prefixes) > 1:
        raise UserError(f"{path} holds SAM mask decoders under {len(prefixes)} prefixes "
                        f"({', '.join(repr(p) for p in prefixes)}): it wraps more than one model; save the one you "
                        "want alone, e.g. torch.save({k[len(p):]: v for k, v in sd.items() if k.startswith(p)}, "
                        "'sam.pt') with p one of them")
    if prefixes and prefixes[0]:
        prefix = prefixes[0]
        kept = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        who = ", then ".join(_WRAPPERS.get(c, f"a wrapper's '{c}.'") for c in prefix.rstrip(".").split("."))
        others = len(state_dict) - len(kept)
        log.info(f"{path}: removed the prefix '{prefix}' ({who}) from its keys"
                 + (f"; left out the {others} tensor{'s' * (others > 1)} outside it" if others else ""))
        state_dict = kept
    return state_dict


def _all_tensors(d: dict) -> bool:
    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _before(key: str, component: str) -> str | None:
    """The part of ``key`` before its first ``component`` (with the trailing dot), or None if it has none."""
    parts = key.split(".")
    return ".".join(parts[: parts.index(component)] + [""]) if component in parts else None


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(9)  # a little-endian header length, then the header's JSON
    return len(head) == 9 and head[8:9] == b"{"


def _safe_extras():
    """weights_only loading with argparse.Namespace allowed (timm and many training scripts save their
    arguments beside the weights); where this torch has no allow-list, plain weights_only loading."""
    import argparse
    import contextlib

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    return safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext()


def _unloadable(path: Path, e: Exception) -> UserError:
    """The one-line error for a checkpoint torch.load refused, its fix chosen by what the file is."""
    with path.open("rb") as f:
        head = f.read(16)
    cause = next((line.strip() for line in str(e).splitlines() if "error:" in line.lower()),
                 (str(e).splitlines() or [""])[0].strip()).split(". ")[0] or type(e).__name__
    if not head:
        return UserError(f"{path} is empty (0 bytes); copy or download the checkpoint again")
    if head[8:9] == b"{":
        return UserError(f"{path} is a damaged safetensors file ({cause[:160]}); download or save it again")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = next((name for magic, name in ((b"\x89PNG", "a PNG image"), (b"\xff\xd8", "a JPEG image"),
                                              (b"\x93NUMPY", "a NumPy array"), (b"\x08", "an ONNX model"))
                     if head.startswith(magic)), "another kind of file")
        return UserError(f"{path} is not a PyTorch checkpoint (it looks like {kind}); pass the .pth/.pt file of "
                         f"SAM ({', '.join(SAM_VIT_TYPES)}) or MobileSAM (vit_t)")
    if isinstance(e, pickle.UnpicklingError) and "global" in str(e).lower():
        unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
        try:
            names = ", ".join(unsafe(path)[:4]) if unsafe else ""
        except Exception:  # only for the message
            names = ""
        return UserError(f"{path} holds Python objects beside its tensors ({names or cause}), which safe loading "
                         "refuses (weights_only=True); where you trust the file, re-save the weights alone: "
                         "torch.save(torch.load(path, weights_only=False)['model'].state_dict(), 'sam.pt') "
                         "(or whichever entry holds them)")
    return UserError(f"{path} is a damaged PyTorch checkpoint ({cause[:160]}); the file may be truncated: "
                     "download it again")


def infer_architecture(state_dict: dict[str, torch.Tensor], path: str | Path = "checkpoint") -> SamArchitecture:
    """Read the image-encoder architecture off the tensor names and shapes (of an unwrapped state dict)."""
    keys = state_dict.keys()
    if not any(k.startswith("mask_decoder.") for k in keys):
        raise _not_sam(state_dict, path)
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
    if is_skb_file(path):  # compressed by lamsc: safetensors + JSON, built from its base architecture
        return load_skb(path, build_sam)
    state_dict = read_state_dict(path)
    arch = infer_architecture(state_dict, path)
    if model_type != "auto" and model_type != arch.model_type:
        fits = "auto" if arch.model_type == "custom" else f"{arch.model_type} (or auto)"
        raise UserError(f"{path} is a {arch.describe()} checkpoint, not {model_type}; use --model-type {fits}")
    model = build_sam(arch)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise UserError(f"{path} does not fit the {arch.describe()} it claims to be ({first[:200]}); "
                        "pass an unmodified official checkpoint") from None
    return model.eval(), arch


def _not_sam(state_dict: dict[str, torch.Tensor], path) -> UserError:
    """Why a state dict with no mask decoder is not SAM's, naming what it does hold."""
    roots = sorted({k.split(".")[0] for k in state_dict})
    if any("image_encoder" in k.split(".") for k in state_dict) or {"patch_embed", "layers"} <= set(roots):
        return UserError(f"{path} holds an image encoder but no mask decoder: it is an encoder-only checkpoint; pass "
                         "the full SAM or MobileSAM checkpoint (sam_vit_*.pth, mobile_sam.pt)")
    named = ", ".join(f"'{r}'" for r in roots[:5]) + (", ..." if len(roots) > 5 else "")
    return UserError(f"{path} has no SAM mask decoder (its tensor names start with {named}); it is not a SAM or "
                     "MobileSAM checkpoint: pass sam_vit_*.pth or mobile_sam.pt")
