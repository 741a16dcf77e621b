"""ASC pack / unpack on a GPU: the CUDA kernels of asc_pack.cu, and the composed-torch path they replace.

The reference these must match bit for bit is the payload's own code (lamsc.semcom.payload), and the dispatch
between the two is ``lamsc.semcom.asc_pack``; this module knows nothing of the payload format beyond the sizes
it is handed, so it sits below lamsc.semcom. Each launch runs on the device its tensors are on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lamsc.kernels.loader import check, library, stream_of


def asc_pack_cuda(values: torch.Tensor, depth: torch.Tensor, num_levels: int, bits: int, level_bits: int):
    """Threshold ``depth`` (h, w) in (0, 1) into levels 1..L (ceil(depth * L) in float32), quantise the kept
    ``values`` (C, h, w) to ``bits`` bits and compact them, on the values' CUDA device.

    Returns (levels (h, w) int64 array, level bytes of ``level_bits`` each, value bytes, scale, kept count),
    or None when liblamsc_kernels.so is not built or the values are not on a GPU.
    """
    lib = library() if values.is_cuda else None
    if lib is None:
        return None
    c, h, w = values.shape
    hw, dev = h * w, values.device
    values = values.detach().float().contiguous()
    depth = depth.detach().float().contiguous().to(dev)
    levels, counts, offsets = (torch.empty(hw, dtype=torch.int32, device=dev) for _ in range(3))
    max_bits, count_t = (torch.zeros(1, dtype=torch.int32, device=dev) for _ in range(2))
    level_words = torch.zeros(max(1, math.ceil(hw * level_bits / 32)), dtype=torch.int32, device=dev)
    value_words = torch.zeros(max(1, math.ceil(c * hw * bits / 32)), dtype=torch.int32, device=dev)
    with torch.cuda.device(dev):  # the launch goes to the current device: make it the tensors'
        check(lib.lamsc_asc_pack(values.data_ptr(), depth.data_ptr(), c, hw, num_levels, bits, level_bits,
                                 levels.data_ptr(), counts.data_ptr(), offsets.data_ptr(), max_bits.data_ptr(),
                                 level_words.data_ptr(), value_words.data_ptr(), count_t.data_ptr(),
                                 stream_of(values)), "lamsc_asc_pack")
    count = int(count_t.item())
    scale = float(max_bits.view(torch.float32).item()) or 1.0
    return (levels.view(h, w).cpu().numpy().astype(np.int64),
            level_words.view(torch.uint8)[: math.ceil(hw * level_bits / 8)].cpu().numpy().tobytes(),
            value_words.view(torch.uint8)[: math.ceil(count * bits / 8)].cpu().numpy().tobytes(),
            scale, count)


def asc_unpack_cuda(level_bytes: bytes, value_bytes: bytes, shape: tuple[int, int, int], num_levels: int,
                    bits: int, level_bits: int, step: float, device: torch.device) -> torch.Tensor | None:
    """Dequantise (``step`` per quantiser level) and scatter a payload's values into (C, h, w) float32 on
    ``device``, zeros where nothing was sent; None when the library is not built or ``device`` is not a GPU.
    ``level_bytes`` holds the depth map at ``level_bits`` per position, all of them (L - 1 everywhere when the
    payload carries no depth map)."""
    device = torch.device(device)
    lib = library() if device.type == "cuda" else None
    if lib is None:
        return None
    c, h, w = shape
    hw = h * w
    lvl = torch.frombuffer(bytearray(level_bytes or b"\0"), dtype=torch.uint8).to(device)  # no empty buffers
    val = torch.frombuffer(bytearray(value_bytes or b"\0"), dtype=torch.uint8).to(device)
    levels, counts, offsets = (torch.empty(hw, dtype=torch.int32, device=device) for _ in range(3))
    out = torch.empty(c, hw, dtype=torch.float32, device=device)
    with torch.cuda.device(device):
        check(lib.lamsc_asc_unpack(lvl.data_ptr(), val.data_ptr(), c, hw, num_levels, bits, level_bits, float(step),
                                   levels.data_ptr(), counts.data_ptr(), offsets.data_ptr(), out.data_ptr(),
                                   stream_of(out)), "lamsc_asc_unpack")
    return out.view(c, h, w)


def asc_pack_torch(values: torch.Tensor, levels: torch.Tensor, num_levels: int, bits: int, level_bits: int):
    """The same pack as composed torch operations on any device, from levels (h, w) in 1..L already
    thresholded: the path the CUDA kernel replaces (stream compaction by boolean indexing).

    Returns (level bytes as a uint8 tensor, value bytes as a uint8 tensor, scale); used by the kernel benchmark.
    """
    c = values.shape[0]
    levels = levels.reshape(-1)
    keep = torch.arange(c, device=values.device).view(1, -1) < (levels * (c // num_levels)).view(-1, 1)
    kept = values.reshape(c, -1).t()[keep].double()
    qmax = (1 << (bits - 1)) - 1
    scale = kept.abs().amax().float().double() if kept.numel() else torch.tensor(1.0, device=values.device)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # all zeros: 1, as the reference
    q = torch.clamp(torch.round(kept / scale * qmax), -qmax, qmax).long() + qmax + 1
    return _pack_bits_torch(levels - 1, level_bits), _pack_bits_torch(q, bits), float(scale)


def _pack_bits_torch(v: torch.Tensor, bits: int) -> torch.Tensor:
    shifts = torch.arange(bits - 1, -1, -1, device=v.device)
    stream = ((v.view(-1, 1) >> shifts) & 1).view(-1)
    stream = torch.nn.functional.pad(stream, (0, (-stream.numel()) % 8)).view(-1, 8)
    return (stream * (1 << torch.arange(7, -1, -1, device=v.device))).sum(1).to(torch.uint8)
