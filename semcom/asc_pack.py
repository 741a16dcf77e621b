"""ASC pack and unpack of the kept features: lamsc.kernels' CUDA kernels on a GPU, the payload's NumPy
reference (``lamsc.semcom.payload``) elsewhere, bit-identical to each other (tests/test_kernels.py). The
kernels take torch's device memory, so torch is imported only on that path."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamsc.semcom.asc_levels import depth_levels
from lamsc.semcom.payload import Parsed, decode_values, level_bits, pack_bits, quantise_and_pack


@dataclass
class Packed:
    levels: np.ndarray        # (h, w) int64 in 1..L
    level_bytes: bytes        # the bit-packed depth map
    value_bytes: bytes        # the quantised kept values
    scale: float              # the quantiser's scale: the largest kept magnitude, float32
    count: int                # kept values
    backend: str              # which ran: "cuda" or "reference"


def asc_pack(values: np.ndarray, depth: np.ndarray, num_levels: int, bits: int = 8, device="cpu") -> Packed:
    """Threshold ``depth`` (h, w) in (0, 1) into levels 1..L, quantise the kept ``values`` (C, h, w) float32 to
    ``bits`` bits and compact them in payload order. Runs the CUDA kernel when ``device`` is a CUDA device (a
    name or torch.device) and liblamsc_kernels.so is built, else the NumPy reference. Raises ValueError when C
    is not a multiple of L."""
    c = values.shape[0]
    if c % num_levels:
        raise ValueError(f"{c} channels do not divide into {num_levels} levels")
    if on_cuda(device):
        import torch

        from lamsc.kernels.asc import asc_pack_cuda

        device = torch.device(device)
        done = asc_pack_cuda(torch.from_numpy(np.ascontiguousarray(values)).to(device),
                             torch.from_numpy(np.ascontiguousarray(depth)).to(device), num_levels, bits,
                             level_bits(num_levels))
        if done is not None:
            return Packed(*done, "cuda")
    levels = depth_levels(np.asarray(depth), num_levels)
    value_bytes, scale, count = quantise_and_pack(np.asarray(values, np.float32), levels, c // num_levels, bits)
    return Packed(levels, pack_bits(levels.ravel() - 1, level_bits(num_levels)), value_bytes, scale, count,
                  "reference")


def asc_unpack(parsed: Parsed, device="cpu") -> tuple:
    """Dequantise and scatter a parsed payload's values into (C, h, w) float32, zeros where nothing was sent:
    a tensor on ``device`` from the CUDA kernel where ``device`` is a CUDA device (a name or torch.device) and
    the kernels are built, else a NumPy array from the reference. Returns (values, which ran: "cuda" or
    "reference")."""
    if on_cuda(device):
        import torch

        from lamsc.kernels.asc import asc_unpack_cuda

        device = torch.device(device)
        L = parsed.num_levels
        # Without ASC there is no depth map on the wire: hand the kernel one saying "all levels".
        level_bytes = parsed.level_bytes or pack_bits(np.full(parsed.shape[1] * parsed.shape[2], L - 1),
                                                      level_bits(L))
        done = asc_unpack_cuda(level_bytes, parsed.value_bytes, parsed.shape, L, parsed.value_bits, level_bits(L),
                               float(parsed.step), device)
        if done is not None:
            return done, "cuda"
    return decode_values(parsed), "reference"


def on_cuda(device) -> bool:
    """Whether ``device`` (a name such as "cuda:1", or a torch.device) is a CUDA device."""
    return str(device).startswith("cuda")
