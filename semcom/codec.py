"""The semantic and channel codec: a convolutional joint source-channel encoder/decoder conditioned on SNR.

One model serves a range of SNRs: every stage is modulated by FiLM (a per-channel scale and shift
computed from the SNR), as ADJSCC's attention-feature modules do (Xu et al., IEEE TCSVT 2022), so
training samples SNRs at random. Each stage normalises with GDN in the encoder and IGDN in the decoder
(Ballé et al., ICLR 2017), the nonlinearity of Deep JSCC (Bourtsoulatze et al., IEEE TCCN 2019) and of
the learned image codecs. The encoder sees the semantic-aware image (RGB plus the ASI importance map) and
outputs ``channels`` feature maps at 1/8 of the image size; the decoder sees the received features plus
the depth map, and has residual blocks at its bottleneck and in every stage.
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


class GDN(nn.Module):
    """Generalised divisive normalisation, y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2) (Ballé,
    Laparra & Simoncelli, ICLR 2016), or with ``inverse`` its inverse y_i = x_i * sqrt(...) (IGDN).
    Shape-preserving: (B, C, H, W) -> (B, C, H, W).

    beta and gamma are the bias and weights of a 1x1 convolution on x², so pruning sees an ordinary
    convolution whose input and output channels follow the feature map's. GDN is defined for beta > 0 and
    gamma >= 0; rather than reparametrise them (CompressAI's way), which would hide the convolution, the
    training loop projects them back after every step (``project_``). Without that a trained normaliser
    turns negative, the clamp below divides by 1e-3, and activations reach 1e7: fp16 and int8 cannot hold them.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse
        self.norm = nn.Conv2d(channels, channels, 1)
        with torch.no_grad():  # beta = 1, gamma = 0.1 I: CompressAI's initialisation
            self.norm.weight.copy_(0.1 * torch.eye(channels).view(channels, channels, 1, 1))
            self.norm.bias.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = torch.sqrt(self.norm(x * x).clamp(min=BETA_MIN))
        return x * scale if self.inverse else x / scale

    @torch.no_grad()
    def project_(self) -> None:
        """Put beta and gamma back in GDN's domain, in place: beta >= ``BETA_MIN``, gamma >= 0."""
        self.norm.weight.clamp_(min=0.0)
        self.norm.bias.clamp_(min=BETA_MIN)


BETA_MIN = 1e-6  # GDN's smallest beta, CompressAI's value


def project_constraints(module: nn.Module) -> None:
    """Project every trainable GDN in ``module`` back into its domain (``GDN.project_``); what the training
    loop runs after each optimiser step. A GDN whose normaliser does not require gradients (a part frozen by
    ``TrainConfig.parts``, a LoRA base) keeps its weights: a frozen part stays what was loaded."""
    for m in module.modules():
        if isinstance(m, GDN) and m.norm.weight.requires_grad:
            m.project_()


class _Stage(nn.Module):
    """conv (strided down or pixel-shuffled up) -> GDN (IGDN up) -> residual blocks -> FiLM(SNR)."""

    def __init__(self, cin: int, cout: int, direction: str, blocks: int = 1):
        super().__init__()
        if direction == "down":
            self.resample = nn.Conv2d(cin, cout, 5, stride=2, padding=2)
        else:
            self.resample = SubPixelUpsample(cin, cout)
        self.act = GDN(cout, inverse=direction == "up")
        self.res = nn.Sequential(*(ResBlock(cout) for _ in range(blocks)))
        self.film = FiLM(cout)

    def forward(self, x: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        return self.film(self.res(self.act(self.resample(x))), snr)


class Encoder(nn.Module):
    """Semantic-aware image (B, 4, H, W) -> features (B, channels, H/8, W/8)."""

    def __init__(self, channels: int = 16, width: int = 128):
        super().__init__()
        self.stages = nn.ModuleList([_Stage(4, width // 2, "down"), _Stage(width // 2, width, "down"),
                                     _Stage(width, width, "down", blocks=2)])
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x, snr)
        return self.out(x)


class Decoder(nn.Module):
    """Received features (B, channels, h, w) and depth map (B, 1, h, w) -> image (B, 3, 8h, 8w) in [0, 1].

    ``forward`` also returns the bottleneck and the last hidden feature maps, which the task heads read.
    """

    def __init__(self, channels: int = 16, width: int = 128):
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.inp_res = nn.Sequential(ResBlock(width), ResBlock(width))
        self.inp_film = FiLM(width)
        self.stages = nn.ModuleList([_Stage(width, width, "up", blocks=2), _Stage(width, width // 2, "up"),
                                     _Stage(width // 2, width // 4, "up")])  # light at full size: CPUs decode
        self.out = nn.Conv2d(width // 4, 3, 3, padding=1)

    def forward(self, z: torch.Tensor, depth: torch.Tensor, snr: torch.Tensor):
        bottleneck = self.inp_film(self.inp_res(torch.nn.functional.gelu(self.inp(torch.cat([z, depth], 1)))),
                                   snr)
        x = bottleneck
        for stage in self.stages:
            x = stage(x, snr)
        return torch.sigmoid(self.out(x)), bottleneck, x
