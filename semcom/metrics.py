"""Quality and rate of a transmitted image: PSNR, importance-weighted PSNR, SSIM, MS-SSIM (pytorch-msssim), bits
and bits per pixel.

Images are torch tensors (N, 3, H, W) in [0, 1] or uint8 arrays (H, W, 3); results are per image.
A metric an image is too small for is NaN (undefined), never a figure computed some other way: SSIM needs
a short side of at least 11 pixels (its window), MS-SSIM over 160 (five scales); PSNR is defined from one
pixel on. Commands report NaN as null in JSON and "n/a" in tables.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pytorch_msssim import ms_ssim as _ms_ssim, ssim as _ssim

SSIM_WINDOW = 11        # Gaussian window side (sigma 1.5) of SSIM and each MS-SSIM scale
MS_SSIM_MIN_SIDE = 161  # five scales, each halving the image, with the window still fitting at the last


def as_batch(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] from a tensor of that form or a uint8 (H, W, 3) / (N, H, W, 3) array."""
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise TypeError("numpy images must be uint8 (H, W, 3); pass float images as torch tensors in [0, 1]")
        t = torch.from_numpy(np.require(x, requirements=["C", "W"])).float().div(255.0)  # copies read-only arrays
        t = t[None] if t.ndim == 3 else t
        return t.permute(0, 3, 1, 2)
    return x[None] if x.ndim == 3 else x


def psnr(x, y, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: 10 log10(range^2 / MSE); inf for identical images."""
    x, y = as_batch(x).double(), as_batch(y).double()
    mse = (x - y).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range**2 / mse)


def weighted_psnr(x, y, weight, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image with each pixel's squared error weighted by its importance:

        WPSNR = 10 log10(range^2 / WMSE),   WMSE = sum_p w_p sum_c (x_pc - y_pc)^2 / (3 sum_p w_p)

    over pixels p and colour channels c. ``x``, ``y``: images as ``psnr`` takes them; ``weight``: w >= 0 per
    pixel, (H, W), (N, H, W) or (N, 1, H, W), tensor or array. lamsc's benchmarks pass ASI's segment importance
    map (each pixel the mean attention weight of the SKB segments covering it, 0 where none does:
    ``LamscModel.asi``'s ``integrated`` output, what training weights distortion by), so the figure is the PSNR
    of the parts of the image ASI deems important. Equal weights give ``psnr``. NaN for an image whose weights
    sum to 0 (nothing is important); inf for one whose pixels of positive weight are all exact.
    """
    x, y = as_batch(x).double(), as_batch(y).double()
    w = torch.as_tensor(np.asarray(weight) if not isinstance(weight, torch.Tensor) else weight).double()
    w = w.reshape(-1, 1, *x.shape[-2:]).expand(x.shape[0], 1, *x.shape[-2:])
    if (w < 0).any():
        raise ValueError("importance weights must be non-negative")
    total = w.flatten(1).sum(1)
    wmse = ((x - y).pow(2) * w).flatten(1).sum(1) / (x.shape[1] * total)
    return torch.where(total > 0, 10.0 * torch.log10(data_range**2 / wmse), torch.full_like(total, float("nan")))


def ssim(x, y) -> torch.Tensor:
    """SSIM per image (Gaussian window 11, sigma 1.5), from pytorch-msssim.

    A short side under 11 pixels gets NaN: the window does not fit (pytorch-msssim would skip the
    smoothing along that side, or fail on a side of one pixel).
    """
    x, y = as_batch(x).float(), as_batch(y).float()
    if min(x.shape[-2:]) < SSIM_WINDOW:
        return torch.full((x.shape[0],), float("nan"))
    return _ssim(x, y, data_range=1.0, size_average=False)


def ms_ssim(x, y) -> torch.Tensor:
    """MS-SSIM per image (five scales, Gaussian window 11), from pytorch-msssim.

    Five scales need a short side above 160 pixels; smaller images get NaN rather than a figure
    computed some other way that would not sit beside published MS-SSIM values.
    """
    x, y = as_batch(x).float(), as_batch(y).float()
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return torch.full((x.shape[0],), float("nan"))
    return _ms_ssim(x, y, data_range=1.0, size_average=False)


def bits(payload: bytes) -> int:
    """Bits that cross the link: the length of the real payload, never a formula."""
    return 8 * len(payload)


def bits_per_pixel(payload: bytes, height: int, width: int) -> float:
    return bits(payload) / (height * width)


def mean_defined(values) -> float:
    """The mean of the values that are defined (not NaN); NaN when none is."""
    defined = [float(v) for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else float("nan")


def strict_json(obj):
    """``obj`` with every NaN or infinite float replaced by None, so that it is JSON any parser reads: a
    metric undefined for an image (SSIM under 11 pixels a side) or infinite (PSNR of an exact copy) is null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def bd_rate(anchor_rate, anchor_psnr, test_rate, test_psnr) -> float:
    """Bjøntegaard delta rate, percent: the mean rate difference of the test curve against the anchor at equal
    PSNR, over the PSNR range both curves cover (negative: the test needs fewer bits).

    Each curve's log10(rate) is fitted as a cubic polynomial of PSNR (least squares; at least 4 points, rates
    positive) and integrated over the common range; BD-rate = (10^(mean difference) - 1) x 100. Source:
    G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", VCEG-M33, 2001. NaN when the
    PSNR ranges do not overlap. Raises ValueError for fewer than 4 points or a rate that is not positive.
    """
    curves = []
    for rate, psnr in ((anchor_rate, anchor_psnr), (test_rate, test_psnr)):
        rate, psnr = np.asarray(rate, np.float64), np.asarray(psnr, np.float64)
        if len(rate) < 4 or len(rate) != len(psnr) or (rate <= 0).any():
            raise ValueError("a BD-rate curve needs at least 4 points of positive rate and a PSNR each")
        curves.append((np.polyfit(psnr, np.log10(rate), 3), psnr.min(), psnr.max()))
    lo, hi = max(c[1] for c in curves), min(c[2] for c in curves)
    if not hi > lo:
        return float("nan")
    integrals = [np.diff(np.polyval(np.polyint(p), [lo, hi]))[0] for p, _, _ in curves]
    return float((10.0 ** ((integrals[1] - integrals[0]) / (hi - lo)) - 1.0) * 100.0)
