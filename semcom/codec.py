"""The semantic and channel codec: a convolutional joint source-channel encoder/decoder conditioned on SNR.

One model serves a range of SNRs: every stage is modulated by FiLM (a per-channel scale and shift
computed from the SNR), as attention-modulated Deep JSCC does, so training samples SNRs at random.
The encoder sees the semantic-aware image (RGB plus the ASI importance map) and outputs ``channels``
feature maps at 1/8 of the image size; the decoder sees the received features plus the depth map.
"""

from __future__ import annotations

import torch
from torch import nn

class FiLM(nn.Module):
    """Scale and shift each channel by amounts computed from the SNR, given as the model places it in its
    trained range (0 at the bottom, 1 at the top: ``LamscModel.snr_input``)."""

    def __init__(self, channels: int, hidden: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)  # starts as the identity

    def forward(self, x: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.net(snr.view(-1, 1)).chunk(2, dim=1)
        return x * (1 + gamma[..., None, None]) + beta[..., None, None]


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        nn.init.zeros_(self.body[-1].weight)  # each block starts as the identity: stable at higher rates
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SubPixelUpsample(nn.Sequential):
    """conv to 4 x cout channels, then PixelShuffle(2): (B, cin, h, w) -> (B, cout, 2h, 2w).

    Its own type so that pruning (lamsc.compress.prune) knows output channel c is conv channels 4c..4c+3.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, 4 * cout, 3, padding=1), nn.PixelShuffle(2))


class _Stage(nn.Module):
    """conv (strided down or pixel-shuffled up) -> GELU -> residual block -> FiLM(SNR)."""

    def __init__(self, cin: int, cout: int, direction: str):
        super().__init__()
        if direction == "down":
            self.resample = nn.Conv2d(cin, cout, 5, stride=2, padding=2)
        else:
            self.resample = SubPixelUpsample(cin, cout)
        self.act = nn.GELU()
        self.res = ResBlock(cout)
        self.film = FiLM(cout)

    def forward(self, x: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        return self.film(self.res(self.act(self.resample(x))), snr)


class Encoder(nn.Module):
    """Semantic-aware image (B, 4, H, W) -> features (B, channels, H/8, W/8)."""

    def __init__(self, channels: int = 16, width: int = 96):
        super().__init__()
        self.stages = nn.ModuleList([_Stage(4, width // 2, "down"), _Stage(width // 2, width, "down"),
                                     _Stage(width, width, "down")])
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x, snr)
        return self.out(x)


class Decoder(nn.Module):
    """Received features (B, channels, h, w) and depth map (B, 1, h, w) -> image (B, 3, 8h, 8w) in [0, 1].

    ``forward`` also returns the bottleneck and the last hidden feature maps, which the task heads read.
    """

    def __init__(self, channels: int = 16, width: int = 96):
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.inp_res = ResBlock(width)
        self.inp_film = FiLM(width)
        self.stages = nn.ModuleList([_Stage(width, width, "up"), _Stage(width, width // 2, "up"),
                                     _Stage(width // 2, width // 2, "up")])
        self.out = nn.Conv2d(width // 2, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, depth: torch.Tensor, snr: torch.Tensor):
        bottleneck = self.inp_film(self.inp_res(torch.nn.functional.gelu(self.inp(torch.cat([z, depth], 1)))),
                                   snr)
        x = bottleneck
        for stage in self.stages:
            x = stage(x, snr)
        return torch.sigmoid(self.out(x)), bottleneck, x
