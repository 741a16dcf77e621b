"""Adaptive semantic compression (ASC): a learnable mask network that decides which features are sent.

The mask is binary and structured: at each feature position it keeps the first ``k`` of the C channels,
with k one of L depth levels (C/L, 2C/L, ..., C). The decoder is trained with random depths (nested
dropout), so the first channels carry the most; the mask network then learns, per image and position,
how deep to go. Side information is one level per position (log2 L bits), not one bit per feature.

Unlike the LAM-SC authors' hard threshold (which has no gradient, so their mask network never learns),
the forward pass uses the hard binary mask and the backward pass the gradient of a sigmoid relaxation
(straight-through), and a rate term on the kept fraction makes the depth adapt to the content.
"""

from __future__ import annotations

import torch
from torch import nn

from lamsc.semcom.asc_levels import DEPTH_BLOCK, block_mean, depth_levels, levels_to_mask
from lamsc.semcom.codec import FiLM


class MaskNetwork(nn.Module):
    """Features (B, C, h, w) + importance (B, 1, h, w) + SNR (as FiLM takes it) -> depth in (0, 1) per
    position (B, 1, h, w)."""

    def __init__(self, channels: int = 16, hidden: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(channels + 1, hidden, 3, padding=1)
        self.film = FiLM(hidden)
        self.conv2 = nn.Conv2d(hidden, 1, 3, padding=1)
        nn.init.constant_(self.conv2.bias, 2.0)  # start by keeping nearly everything

    def forward(self, z: torch.Tensor, importance: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z, importance, snr))

    def logits(self, z: torch.Tensor, importance: torch.Tensor, snr: torch.Tensor) -> torch.Tensor:
        """The depth before its sigmoid (B, 1, h, w): what training shifts, since it never saturates."""
        return self.conv2(self.film(torch.nn.functional.gelu(self.conv1(torch.cat([z, importance], 1))), snr))


def sent_depth(logits: torch.Tensor, rate: torch.Tensor | None, num_levels: int) -> torch.Tensor:
    """ASC's depth logits (B, 1, h, w) -> the depth map the link sends: the mean of its depth over blocks of
    ``DEPTH_BLOCK`` positions (lamsc.semcom.asc_levels.block_mean, the host's rule), shifted to keep the
    fraction ``rate`` (B,) when given (``shift_to_rate``). Differentiable: the mask network learns which
    blocks to send first."""
    depth = block_mean(torch.sigmoid(logits.float()), DEPTH_BLOCK)
    if rate is None:
        return depth
    return shift_to_rate(torch.logit(depth, eps=1e-6), rate, num_levels)


def shift_to_rate(logits: torch.Tensor, rate: torch.Tensor, num_levels: int, iterations: int = 40) -> torch.Tensor:
    """ASC's depth logits (B, 1, h, w) -> depth maps in (0, 1), each shifted so that it keeps the fraction
    ``rate`` (B,) of the feature values, or the most below it: depth = sigmoid(logits + t_b), one offset per
    image, found by bisection without gradient. Gradients reach ``logits`` through the sigmoid around the
    kept rate, so a mask network trained through this learns where to send (the order of positions), while
    the amount is set from outside: its rate cannot collapse to a constant, and nothing saturates."""
    logits = logits.float()
    with torch.no_grad():
        flat = logits.flatten(1)  # from every position at level 1 to every position at level L
        lo, hi = -flat.amax(1) - 20.0, -flat.amin(1) + 20.0
        for _ in range(iterations):
            mid = 0.5 * (lo + hi)
            kept = depth_levels(torch.sigmoid(logits + mid.view(-1, 1, 1, 1)), num_levels).float().mean((1, 2, 3))
            fits = kept / num_levels <= rate
            lo, hi = torch.where(fits, mid, lo), torch.where(fits, hi, mid)
    return torch.sigmoid(logits + lo.view(-1, 1, 1, 1))


def straight_through_mask(depth: torch.Tensor, channels: int, num_levels: int,
                          temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard mask forward, sigmoid-relaxed gradient backward. Returns (mask, levels)."""
    levels = depth_levels(depth.squeeze(1), num_levels)
    hard = levels_to_mask(levels, channels, num_levels)
    if not (torch.is_grad_enabled() and depth.requires_grad):
        return hard, levels  # hard + soft - soft is not exactly hard in floating point
    per_level = channels // num_levels
    c = torch.arange(channels, device=depth.device).view(1, -1, 1, 1).float()
    # Soft mask: 1 well below the kept depth, 0 well above it, about one level wide in between.
    soft = torch.sigmoid((depth * channels - c - 0.5) / (temperature * per_level))
    return hard + soft - soft.detach(), levels


def random_levels(shape: tuple[int, int, int], num_levels: int, keep_all: float = 0.5,
                  device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Nested dropout for training the codec: each image keeps everything with probability ``keep_all``,
    otherwise each position gets a uniformly random level."""
    b = shape[0]
    levels = torch.randint(1, num_levels + 1, shape, device=device, generator=generator)
    full = torch.rand(b, device=device, generator=generator) < keep_all
    levels[full] = num_levels
    return levels
