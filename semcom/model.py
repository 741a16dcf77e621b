"""The LAM-SC model: ASI -> encoder -> ASC mask -> (channel) -> decoder -> heads, and its checkpoint files.

A checkpoint is a directory-free pair: ``NAME.safetensors`` (weights) and ``NAME.json`` (the config,
including how it was trained), so it loads without pickles and without the code that trained it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from lamsc.errors import UserError
from lamsc.semcom.architecture import apply as apply_architecture
from lamsc.semcom.asc import MaskNetwork, levels_to_mask, sent_depth, straight_through_mask
from lamsc.semcom.asi import ASI
from lamsc.semcom.codec import Decoder, Encoder
from lamsc.semcom.config import (CONFIG_VERSION, DEFAULT_MODEL, DOWNSAMPLING, ModelConfig, power_normalise)
from lamsc.semcom.files import honour_umask
from lamsc.semcom.heads import ClassificationHead, SegmentationHead

class LamscModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.channels % config.num_levels:
            raise ValueError("channels must be a multiple of num_levels")
        self.config = config
        self.asi = ASI()
        self.encoder = Encoder(config.channels, config.width)
        self.mask_net = MaskNetwork(config.channels)
        self.decoder = Decoder(config.channels, config.width)
        self.classifier = ClassificationHead(config.width, len(config.classes)) if config.classes else None
        self.segmenter_head = SegmentationHead(config.width // 4, config.seg_classes) if config.seg_classes else None

    # -- transmitter side -------------------------------------------------------------------------
    def encode(self, image: torch.Tensor, masks: torch.Tensor, snr_db: torch.Tensor, asc: bool = True,
               levels: torch.Tensor | None = None, rate: torch.Tensor | None = None) -> dict:
        """Image (B, 3, H, W) in [0, 1] with H, W multiples of 8, SKB masks (B, K, H, W), SNR (B,) ->
        power-normalised kept features ``z``, the encoder's ``features`` before masking, the mask, levels,
        ASC's ``depth`` and the ASI maps.

        ``levels`` forces the depths (nested-dropout training); otherwise ASC decides, from its depth map as
        the link sends it (its block mean, ``sent_depth``), or with asc=False everything is kept. ``rate``
        (B,): the fraction of values ASC keeps per image (``shift_to_rate``); ``depth`` stays ASC's own.
        """
        weights, integrated, importance = self.asi(image, masks)
        snr = self.snr_input(snr_db)
        z = self.features(image, importance, snr_db)
        c, L = self.config.channels, self.config.num_levels
        depth = None
        if levels is not None:
            mask = levels_to_mask(levels, c, L)
        elif asc:
            # ASC sees the features at unit power and without a path back into the encoder: its decision does
            # not hang on their scale, and its rate term cannot reshape them
            seen = z.detach() * torch.rsqrt(z.detach().float().pow(2).mean((1, 2, 3), keepdim=True) + 1e-12).to(z.dtype)
            logits = self.mask_net.logits(seen, F.avg_pool2d(importance, DOWNSAMPLING), snr)  # H, W: multiples of 8
            depth = torch.sigmoid(logits)
            mask, levels = straight_through_mask(sent_depth(logits, rate, L), c, L)
        else:
            levels = torch.full((z.shape[0], *z.shape[-2:]), L, dtype=torch.long, device=z.device)
            mask = torch.ones_like(z)
        return {"z": power_normalise(z, mask), "features": z, "mask": mask, "levels": levels, "depth": depth,
                "depth_logits": None if depth is None else logits,
                "weights": weights, "integrated": integrated, "importance": importance}

    def with_levels(self, encoded: dict, levels: torch.Tensor) -> dict:
        """``encode``'s output with the depths forced to ``levels`` (B, h, w): what ``encode(..., levels=levels)``
        returns for the same image and SNR, built from ``encoded["features"]`` without running the encoder
        again (ASC's ``depth`` is then None, as there)."""
        mask = levels_to_mask(levels, self.config.channels, self.config.num_levels)
        return {**encoded, "z": power_normalise(encoded["features"], mask), "mask": mask, "levels": levels,
                "depth": None, "depth_logits": None}

    def features(self, image: torch.Tensor, importance: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        """The encoder alone: image (B, 3, H, W) in [0, 1], ASI's importance map (B, 1, H, W) and SNR (B,) in dB
        -> features (B, C, H/8, W/8) before ASC and power normalisation (``encode``'s ``features``)."""
        return self.encoder(torch.cat([image, importance], 1), self.snr_input(snr_db))

    def snr_input(self, snr_db: torch.Tensor) -> torch.Tensor:
        """SNR (B,) in dB -> what the FiLM layers take: its place in the trained ``snr_range``, 0 at the
        bottom and 1 at the top (beyond the range it extrapolates)."""
        lo, hi = self.config.snr_range
        return (snr_db - lo) / (hi - lo)

    # -- receiver side ----------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, levels: torch.Tensor, snr_db: torch.Tensor) -> dict:
        """Received features (zeros where nothing was sent) and levels -> image and task outputs."""
        depth = (levels.float() / self.config.num_levels).unsqueeze(1)
        image, bottleneck, hidden = self.decoder(z, depth, self.snr_input(snr_db))
        out = {"image": image}
        if self.classifier is not None:
            out["class_logits"] = self.classifier(bottleneck)
        if self.segmenter_head is not None:
            out["seg_logits"] = self.segmenter_head(hidden)
        return out

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write PATH.safetensors and PATH.json (PATH without suffix).

        ``half`` stores the weights as float16 (half the bytes, for shipping); loading casts them back.
        """
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        cast = (lambda t: t.half() if t.is_floating_point() else t) if half else (lambda t: t)
        save_file({k: cast(v.detach()).contiguous().cpu() for k, v in self.state_dict().items()},
                  str(base.with_suffix(".safetensors")), metadata={"format": "pt", "lamsc": str(CONFIG_VERSION)})
        honour_umask(base.with_suffix(".safetensors"))
        base.with_suffix(".json").write_text(self.config.to_json())
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> "LamscModel":
        base = Path(path).with_suffix("")
        weights, config = base.with_suffix(".safetensors"), base.with_suffix(".json")
        for f in (weights, config):
            if not f.is_file():
                raise UserError(f"model file not found: {f}; a lamsc model is a .safetensors file with its "
                                ".json config beside it")
        try:
            model = cls(ModelConfig.from_json(config.read_text()))
        except UserError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # damaged JSON or fields of another file
            raise UserError(f"{config} is not a lamsc model config ({type(e).__name__}: {e}); keep the .json saved "
                            "with the model beside its .safetensors") from None
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise UserError(f"{weights} is not a readable safetensors file ({e}); copy it again") from None
        if model.config.architecture:  # a pruned model: reshape the built one to the saved widths
            apply_architecture(model, model.config.architecture, state)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise UserError(f"{weights} does not match its config {config.name}; keep the pair that was "
                            "saved together") from None
        return model.eval()


def load_model(path: str | Path | None = None) -> LamscModel:
    """A saved model, or the shipped default when ``path`` is None. ``path`` may be the model file (with or
    without its suffix) or a folder holding ``model.safetensors`` (what `lamsc train` and `lamsc federate` write)."""
    if path is None:
        if not DEFAULT_MODEL.with_suffix(".safetensors").is_file():
            raise UserError("the shipped default model is missing from this install; reinstall lamsc, or train "
                            "one with `lamsc train --preset default` and pass --model")
        path = DEFAULT_MODEL
    elif Path(path).is_dir():
        if not (Path(path) / "model.safetensors").is_file():
            raise UserError(f"{path} is a folder without model.safetensors; give the model's .safetensors file "
                            "(its .json beside it)")
        path = Path(path) / "model"
    return LamscModel.load(path)
