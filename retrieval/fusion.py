"""The fusion network: refines a decoded image with a retrieved one placed over it (lamsc.retrieval.align).

The reference's light was fitted to the decoded view (lamsc.retrieval.align.match_light), and an MSE-trained
decoder gives the conditional mean of what was sent: at low SNR it shrinks the contrast towards the mean (the
codec's 9-pixel-blurred output regresses on the sent view's with a slope of about 0.8-0.9 at 0 dB, 0.95 at 10 dB),
and a curve fitted to it passes that shrinkage on to the reference. The network first undoes it: each colour
channel of the reference is stretched about its mean over the coverage by exp(a + b s + c s^2), s the SNR placed
in the codec's range, the nine coefficients learned with the rest (zero at the start: no stretch).

Input, per pixel: the decoded image (3), the aligned, light-matched reference so stretched (3), its coverage (1)
and the SNR the decoder was told, placed in the codec's range as the codec's FiLM layers take it (1). Output: a weight
``alpha`` in (0, 1) and a residual (3); the refined image is ``decoded + alpha * coverage * (reference -
decoded) + residual``, clipped to [0, 1]. The network works at half resolution (a stride-2 convolution, residual
blocks, a sub-pixel convolution back up), so it sees 10 x 10 pixel neighbourhoods at the cost of a few
convolutions per image; it learns where to trust the reference (it agrees with what arrived: the same scene,
not occluded) and how much at each SNR. It is trained with the codec frozen (lamsc.retrieval.training).

A fusion checkpoint is a pair like a codec's: NAME.safetensors (weights) and NAME.json (``FusionConfig``:
sizes, the acceptance ``threshold`` on the registration's score and the sharpness weight in it, and how all were
obtained).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lamsc.errors import UserError
from lamsc.semcom.codec import ResBlock
from lamsc.semcom.config import JsonConfig

FUSION_VERSION = 4  # 2: the threshold is on orientation-correlation agreement; 3: the contrast stretch;
# 4: the threshold is on agreement + sharpness_weight x peak-to-sidelobe ratio
DEFAULT_FUSION = Path(__file__).parent / "default_fusion" / "fusion"
INPUTS = 8  # decoded RGB, reference RGB, coverage, SNR


@dataclass
class FusionConfig(JsonConfig):
    """``width``: feature maps at half resolution; ``blocks``: residual blocks; ``snr_range``: the codec's,
    dB, for placing the SNR input; ``threshold``: the least registration score at which a retrieved entry is
    used, the score being the agreement (orientation correlation, -1..1) plus ``sharpness_weight`` times the
    peak-to-sidelobe ratio (lamsc.retrieval.align); ``trained``: provenance (data, steps, losses, how the
    threshold and weight were set)."""

    NAME, VERSION, REFRESH = "fusion config", FUSION_VERSION, "retrain it with `lamsc kb train`"

    width: int = 32
    blocks: int = 3
    snr_range: tuple[float, float] = (0.0, 20.0)
    threshold: float = 0.35  # about where other scenes' agreements end; training.calibrate sets each network's
    sharpness_weight: float = 0.0  # training.calibrate sets it with the threshold
    trained: dict = field(default_factory=dict)
    version: int = FUSION_VERSION


class FusionNet(nn.Module):
    def __init__(self, config: FusionConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.down = nn.Sequential(nn.Conv2d(INPUTS, w, 3, stride=2, padding=1), nn.GELU())
        self.blocks = nn.Sequential(*[ResBlock(w) for _ in range(config.blocks)])
        self.up = nn.Sequential(nn.Conv2d(w, 4 * 4, 3, padding=1), nn.PixelShuffle(2))
        self.skip = nn.Conv2d(INPUTS, 4, 3, padding=1)  # full-resolution detail the half-resolution path misses
        for conv in (self.up[0], self.skip):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)  # starts at alpha 0.5, no residual
        self.stretch = nn.Parameter(torch.zeros(3, 3))  # [power of s, colour channel]: log of the stretch

    def stretched(self, reference: torch.Tensor, coverage: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        """``reference`` (B, 3, H, W) with each channel stretched about its mean over ``coverage`` (B, 1, H, W)
        by exp(a + b s + c s^2), ``snr`` (B,) placed in [0, 1]; clipped to [0, 1], zero outside the coverage."""
        area = coverage.sum((2, 3), keepdim=True).clamp_min(1.0)
        mean = (reference * coverage).sum((2, 3), keepdim=True) / area
        powers = torch.stack([torch.ones_like(snr), snr, snr * snr], 1)  # (B, 3)
        gain = torch.exp(powers @ self.stretch).view(-1, 3, 1, 1)
        return (mean + (reference - mean) * gain).clamp(0, 1) * coverage

    def forward(self, decoded: torch.Tensor, reference: torch.Tensor, coverage: torch.Tensor,
                snr_db: torch.Tensor) -> torch.Tensor:
        """decoded, reference (B, 3, H, W) in [0, 1], H and W even; coverage (B, 1, H, W) in {0, 1}; SNR (B,)
        dB -> the refined image (B, 3, H, W) in [0, 1]."""
        lo, hi = self.config.snr_range
        s = (snr_db - lo) / (hi - lo)
        reference = self.stretched(reference, coverage, s)
        x = torch.cat([decoded, reference, coverage, s.view(-1, 1, 1, 1).expand_as(coverage)], 1)
        out = self.up(self.blocks(self.down(x))) + self.skip(x)
        alpha, residual = torch.sigmoid(out[:, :1]), out[:, 1:]
        return (decoded + alpha * coverage * (reference - decoded) + residual).clamp(0, 1)

    def save(self, path: str | Path) -> Path:
        """Write PATH.safetensors and PATH.json (PATH without suffix) -> the .safetensors path."""
        base = Path(path).with_suffix("")
        base.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(base.with_suffix(".safetensors")))
        base.with_suffix(".json").write_text(self.config.to_json())
        return base.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path | None = None) -> "FusionNet":
        """A saved fusion network, or the shipped default when ``path`` is None. Raises UserError for missing,
        damaged or mismatched files."""
        base = Path(path).with_suffix("") if path is not None else DEFAULT_FUSION
        weights, config = base.with_suffix(".safetensors"), base.with_suffix(".json")
        for f in (weights, config):
            if not f.is_file():
                raise UserError(f"fusion network file not found: {f}; give the .safetensors with its .json beside "
                                "it, or train one with `lamsc kb train`")
        try:
            net = cls(FusionConfig.from_json(config.read_text()))
            net.load_state_dict(load_file(str(weights)), strict=True)
        except UserError:
            raise
        except Exception as e:  # damaged JSON, safetensors' own errors, or weights of other sizes
            raise UserError(f"{weights} with {config.name} is not a lamsc fusion network ({type(e).__name__}); "
                            "keep the pair that was saved together") from None
        return net.eval()
