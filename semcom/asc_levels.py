"""ASC's depth map as the link sends it: levels from depths, the mask a level keeps, the map's block mean and
the map shifted to fit a channel budget. NumPy arrays here (the transmitter's host side, torch-free);
``depth_levels``, ``levels_to_mask`` and ``block_mean`` take torch tensors too, for training (lamsc.semcom.asc)."""

from __future__ import annotations

import numpy as np


def depth_levels(depth, num_levels: int):
    """Continuous depth in (0, 1) -> integer level in 1..L, same shape: the smallest level covering it.

    ceil(depth * L) in float32, exactly as the CUDA pack kernel thresholds it. An array gives int64 levels, a
    tensor a long tensor.
    """
    if isinstance(depth, np.ndarray):
        return np.clip(np.ceil(depth.astype(np.float32) * np.float32(num_levels)), 1, num_levels).astype(np.int64)
    return depth.float().mul(num_levels).ceil().clamp(1, num_levels).long()


def levels_to_mask(levels, channels: int, num_levels: int):
    """Levels (..., h, w) in 1..L -> float mask (..., C, h, w): channel c kept where c < level * C / L. Arrays
    give float32 arrays, tensors float tensors on their device."""
    per_level = channels // num_levels
    if isinstance(levels, np.ndarray):
        c = np.arange(channels).reshape(-1, 1, 1)
        return (c < (levels * per_level)[..., None, :, :]).astype(np.float32)
    import torch  # a tensor: torch is there

    c = torch.arange(channels, device=levels.device).view(-1, 1, 1)
    return (c < (levels * per_level).unsqueeze(-3)).float()


# The depth map is side information, paid for out of the link's channel uses. ASC's map varies from position to
# position and codes in about 10,000 bits per photograph (lamsc.semcom.depth_code); its mean over blocks of
# 8 x 8 positions (64 x 64 pixels) keeps which regions matter most and codes in about a tenth of that, for
# about the same PSNR at the same kept fraction: under a budget the uses saved buy features, most where side
# bits cost most (0 dB), and ASC's own choice spends fewer uses (benchmarks/results/default_model.md).
DEPTH_BLOCK = 8


def block_mean(depth, size: int):
    """Each position of ``depth`` (..., h, w) replaced by the mean of its ``size`` x ``size`` block of its map
    (blocks from the top-left corner; those at the right and bottom edges cut short), float32 as ASC's depth
    is; size 1 returns it as it is. An array is summed in float64; a tensor (training: lamsc.semcom.asc) is
    pooled in float32 on its device and keeps its gradient, so a level boundary may differ by one ulp."""
    if hasattr(depth, "detach"):  # a tensor: torch is there
        from torch.nn import functional as F

        h, w = depth.shape[-2:]
        pooled = F.avg_pool2d(depth.float().reshape(-1, 1, h, w), size, ceil_mode=True)  # edge blocks: their mean
        out = pooled.repeat_interleave(size, -2).repeat_interleave(size, -1)[..., :h, :w]
        return out.reshape(depth.shape)
    depth = np.asarray(depth, np.float32)
    if size == 1:
        return depth
    h, w = depth.shape[-2:]
    rows, cols = np.arange(0, h, size), np.arange(0, w, size)
    sums = np.add.reduceat(np.add.reduceat(depth.astype(np.float64), rows, -2), cols, -1)
    counts = np.outer(np.diff(rows, append=h), np.diff(cols, append=w))
    return np.repeat(np.repeat(sums / counts, size, -2), size, -1)[..., :h, :w].astype(np.float32)


def sent_levels(depth, num_levels: int) -> np.ndarray:
    """ASC's own choice as the link sends it: depth maps (..., h, w) in (0, 1) (an array or a tensor) -> the
    levels (..., h, w) int64 of their block means (``block_mean`` over ``DEPTH_BLOCK``), what a payload
    carries when no budget or kept fraction shifts them."""
    if not isinstance(depth, np.ndarray):
        depth = depth.detach().float().cpu().numpy()
    return depth_levels(block_mean(depth, DEPTH_BLOCK), num_levels)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.float32(1) / (np.float32(1) + np.exp(-x))


def depth_for_budget(depth: np.ndarray, num_levels: int, per_level: int, max_values: int) -> np.ndarray:
    """ASC's depth map (h, w) in (0, 1), shifted so that it keeps as many feature values as fit in
    ``max_values`` and no more: depth' = sigmoid(logit(depth) + t), one offset t for the whole map, found by
    bisection (the kept count rises with t), in float32. Positions keep their order, so what ASC chose to send
    first is still sent first; only the total moves. Every position keeps at least its first level, so a budget
    below ``per_level * h * w`` values gets the shallowest map, which is then over the budget."""
    d = np.clip(np.asarray(depth, np.float32), np.float32(1e-6), np.float32(1 - 1e-6))
    logit = np.log(d / (np.float32(1) - d))

    def kept(t: float) -> int:
        return per_level * int(depth_levels(_sigmoid(logit + np.float32(t)), num_levels).sum())

    lo, hi = -40.0, 40.0
    if kept(hi) <= max_values:
        return _sigmoid(logit + np.float32(hi))
    for _ in range(50):  # the offset to well below a thousandth of a level
        mid = 0.5 * (lo + hi)
        if kept(mid) <= max_values:
            lo = mid
        else:
            hi = mid
    return _sigmoid(logit + np.float32(lo))
