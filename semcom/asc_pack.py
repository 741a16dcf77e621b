"""ASC pack and unpack of the kept features: lamsc.kernels' CUDA kernels on a GPU, the payload's NumPy
reference (``lamsc.semcom.payload``) elsewhere, bit-identical to each other (tests/test_kernels.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lamsc.kernels.asc import asc_pack_cuda, asc_unpack_cuda
from lamsc.semcom.asc import depth_levels
from lamsc.semcom.payload import Parsed, decode_values, level_bits, pack_bits, quantise_and_pack


@dataclass
class Packed:
    levels: np.ndarray        # (h, w) int64 in 1..L
    level_bytes: bytes        # the bit-packed depth map
    value_bytes: bytes        # the quantised kept values
    scale: float              # the quantiser's scale: the largest kept magnitude, float32
    count: int                # kept values
    backend: str              # which ran: "cuda" or "reference"


def asc_pack(values: torch.Tensor, depth: torch.Tensor, num_levels: int, bits: int = 8) -> Packed:
    """Threshold ``depth`` (h, w) in (0, 1) into levels 1..L, quantise the kept ``values`` (C, h, w) to
    ``bits`` bits and compact them in payload order. Runs the CUDA kernel when the values are on a GPU and
    liblamsc_kernels.so is built. Raises ValueError when C is not a multiple of L."""
    c = values.shape[0]
    if c % num_levels:
        raise ValueError(f"{c} channels do not divide into {num_levels} levels")
    done = asc_pack_cuda(values, depth, num_levels, bits, level_bits(num_levels))
    if done is not None:
        return Packed(*done, "cuda")
    levels = depth_levels(depth.cpu(), num_levels).numpy()
    value_bytes, scale, count = quantise_and_pack(values.detach().cpu().numpy(), levels, c // num_levels, bits)
    return Packed(levels, pack_bits(levels.ravel() - 1, level_bits(num_levels)), value_bytes, scale, count,
                  "reference")


def asc_unpack(parsed: Parsed, device: str | torch.device = "cpu") -> tuple[torch.Tensor, str]:
    """Dequantise and scatter a parsed payload's values into (C, h, w) float32 on ``device``, zeros where
    nothing was sent; returns (values, which ran: "cuda" or "reference")."""
    L = parsed.num_levels
    # Without ASC there is no depth map on the wire: hand the kernel one saying "all levels".
    level_bytes = parsed.level_bytes or pack_bits(np.full(parsed.shape[1] * parsed.shape[2], L - 1), level_bits(L))
    done = asc_unpack_cuda(level_bytes, parsed.value_bytes, parsed.shape, L, parsed.value_bits, level_bits(L),
                           float(parsed.step), torch.device(device))
    if done is not None:
        return done, "cuda"
    return torch.from_numpy(decode_values(parsed)).to(device), "reference"
