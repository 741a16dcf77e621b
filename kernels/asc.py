"""ASC pack / unpack: CUDA kernels (asc_pack.cu) or the NumPy reference of lamsc.semcom.payload."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lamsc.kernels.loader import check, library, stream_of
from lamsc.semcom.asc import depth_levels
from lamsc.semcom.payload import Parsed, decode_values, level_bits, pack_bits, quantise_and_pack


@dataclass
class Packed:
    levels: np.ndarray        # (h, w) int in 1..L
    level_bytes: bytes        # the bit-packed depth map
    value_bytes: bytes        # the quantised kept values
    scale: float
    count: int                # kept values
    backend: str              # "cuda" or "reference"


def asc_pack(values: torch.Tensor, depth: torch.Tensor, num_levels: int, bits: int = 8) -> Packed:
    """Threshold ``depth`` (h, w) into levels, quantise the kept ``values`` (C, h, w) and compact them."""
    c, h, w = values.shape
    if c % num_levels:
        raise ValueError(f"{c} channels do not divide into {num_levels} levels")
    lib = library() if values.is_cuda else None
    if lib is None:
        levels = depth_levels(depth.cpu(), num_levels).numpy()
        value_bytes, scale, count = quantise_and_pack(values.detach().cpu().numpy(), levels, c // num_levels, bits)
        return Packed(levels, pack_bits(levels.ravel() - 1, level_bits(num_levels)), value_bytes, scale, count,
                      "reference")
    hw, lb = h * w, level_bits(num_levels)
    dev = values.device
    values = values.detach().float().contiguous()
    depth = depth.detach().float().contiguous().to(dev)
    levels, counts, offsets = (torch.empty(hw, dtype=torch.int32, device=dev) for _ in range(3))
    max_bits, count_t = (torch.zeros(1, dtype=torch.int32, device=dev) for _ in range(2))
    level_words = torch.zeros(max(1, math.ceil(hw * lb / 32)), dtype=torch.int32, device=dev)
    value_words = torch.zeros(max(1, math.ceil(c * hw * bits / 32)), dtype=torch.int32, device=dev)
    check(lib.lamsc_asc_pack(values.data_ptr(), depth.data_ptr(), c, hw, num_levels, bits, lb, levels.data_ptr(),
                             counts.data_ptr(), offsets.data_ptr(), max_bits.data_ptr(), level_words.data_ptr(),
                             value_words.data_ptr(), count_t.data_ptr(), stream_of(values)), "lamsc_asc_pack")
    count = int(count_t.item())
    scale = float(max_bits.view(torch.float32).item()) or 1.0
    return Packed(levels.view(h, w).cpu().numpy().astype(np.int64),
                  level_words.view(torch.uint8)[: math.ceil(hw * lb / 8)].cpu().numpy().tobytes(),
                  value_words.view(torch.uint8)[: math.ceil(count * bits / 8)].cpu().numpy().tobytes(),
                  scale, count, "cuda")


def asc_pack_torch(values: torch.Tensor, depth: torch.Tensor, num_levels: int, bits: int = 8):
    """The same pack as composed torch operations on any device: the path the CUDA kernel replaces.

    Returns (level bit tensor, value bit tensor as uint8 bytes, scale); used by the kernel benchmark.
    """
    c, h, w = values.shape
    levels = depth_levels(depth, num_levels).view(-1)
    keep = torch.arange(c, device=values.device).view(1, -1) < (levels * (c // num_levels)).view(-1, 1)
    kept = values.reshape(c, -1).t()[keep].double()  # boolean indexing: the stream compaction
    qmax = (1 << (bits - 1)) - 1
    scale = kept.abs().amax().float().double() if kept.numel() else torch.tensor(1.0, device=values.device)
    q = torch.clamp(torch.round(kept / scale * qmax), -qmax, qmax).long() + qmax + 1
    return _pack_bits_torch(levels - 1, level_bits(num_levels)), _pack_bits_torch(q, bits), float(scale)


def _pack_bits_torch(v: torch.Tensor, bits: int) -> torch.Tensor:
    shifts = torch.arange(bits - 1, -1, -1, device=v.device)
    stream = ((v.view(-1, 1) >> shifts) & 1).view(-1)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8)).view(-1, 8)
    return (stream * (1 << torch.arange(7, -1, -1, device=v.device))).sum(1).to(torch.uint8)


def asc_unpack(parsed: Parsed, device: str | torch.device = "cpu") -> tuple[torch.Tensor, str]:
    """Dequantise and scatter a parsed payload's values into (C, h, w) on ``device``; returns (values, backend)."""
    c, h, w = parsed.shape
    L, bits = parsed.num_levels, parsed.value_bits
    device = torch.device(device)
    lib = library() if device.type == "cuda" else None
    if lib is None:
        return torch.from_numpy(decode_values(parsed)).to(device), "reference"
    hw = h * w
    # Without ASC there is no depth map on the wire: hand the kernel one saying "all levels".
    level_bytes = parsed.level_bytes or pack_bits(np.full(hw, L - 1), level_bits(L))
    lvl = torch.frombuffer(bytearray(level_bytes or b"\0"), dtype=torch.uint8).to(device)  # no empty buffers
    val = torch.frombuffer(bytearray(parsed.value_bytes or b"\0"), dtype=torch.uint8).to(device)
    levels, counts, offsets = (torch.empty(hw, dtype=torch.int32, device=device) for _ in range(3))
    out = torch.empty(c, hw, dtype=torch.float32, device=device)
    check(lib.lamsc_asc_unpack(lvl.data_ptr(), val.data_ptr(), c, hw, L, bits, level_bits(L), float(parsed.step),
                               levels.data_ptr(), counts.data_ptr(), offsets.data_ptr(), out.data_ptr(),
                               stream_of(out)), "lamsc_asc_unpack")
    return out.view(c, h, w), "cuda"
