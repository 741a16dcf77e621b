"""The SKB a command or a deployment asks for: SAM or MobileSAM from a checkpoint file (on torch), or the
weight-free fallback (NumPy)."""

from __future__ import annotations

from pathlib import Path

from lamsc.errors import UserError
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.segmenter import MaskGenerationOptions, Segmenter


def build_segmenter(checkpoint: str | Path | None = None, model_type: str = "auto",
                    options: MaskGenerationOptions | None = None, device: str = "auto") -> Segmenter:
    """SAM/MobileSAM from ``checkpoint`` when one is named, otherwise the weight-free fallback."""
    if checkpoint is None:
        if model_type not in ("auto", None):
            raise UserError(f"--model-type {model_type} needs a --checkpoint file to load it from")
        return FallbackSegmenter()
    from lamsc.semcom.sam_checkpoint import load_sam  # SAM runs on torch, which a deployment may lack
    from lamsc.semcom.sam_segmenter import SamSegmenter

    model, arch = load_sam(checkpoint, model_type)
    return SamSegmenter(model, arch, Path(checkpoint).name, options, device)
