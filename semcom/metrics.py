"""Quality and rate of a transmitted image: PSNR, importance-weighted PSNR, SSIM, MS-SSIM, bits and bits per
pixel.

Images are uint8 arrays (H, W, 3) or (N, H, W, 3), or float tensors/arrays (N, 3, H, W) in [0, 1]; results
are per image: a float64 array (N,) for a batch, a NumPy float64 for one (H, W, 3) image. A metric an image
is too small for is NaN (undefined), never a figure computed some other way: SSIM needs a short side of at
least 11 pixels (its window), MS-SSIM over 160 (five scales); PSNR is defined from one pixel on. Commands
report NaN as null in JSON and "n/a" in tables.

SSIM is Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility to structural
similarity" (IEEE TIP 2004): an 11-tap Gaussian window of sigma 1.5 applied without padding, K1 = 0.01,
K2 = 0.03, the mean over positions and then over colour channels. MS-SSIM is Wang, Simoncelli and Bovik,
"Multi-scale structural similarity for image quality assessment" (Asilomar 2003), five scales with the
paper's exponents, each scale a 2x2 average (zero-padded to even sides) of the one before, negative
contrast-structure terms clipped to zero: the computation of pytorch-msssim (in float32, as it runs), which
tests/test_metrics.py checks this NumPy one against, so figures sit beside the field's published values.
"""

from __future__ import annotations

import math

import numpy as np

SSIM_WINDOW = 11        # Gaussian window side (sigma 1.5) of SSIM and each MS-SSIM scale
SSIM_SIGMA = 1.5
SSIM_K = (0.01, 0.03)
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, table of exponents
MS_SSIM_MIN_SIDE = 161  # five scales, each halving the image, with the window still fitting at the last


def as_batch(x) -> np.ndarray:
    """(N, 3, H, W) float64 in [0, 1] from a uint8 (H, W, 3) / (N, H, W, 3) array, or from a float array or
    torch tensor of that form (copied to the host)."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        a = x[None] if x.ndim == 3 else x
        return a.transpose(0, 3, 1, 2).astype(np.float64) / 255.0
    if isinstance(x, np.ndarray) and x.dtype.kind != "f":
        raise TypeError("images are uint8 (H, W, 3), or float (N, 3, H, W) in [0, 1]")
    a = _float64(x)
    return a[None] if a.ndim == 3 else a


def _float64(x) -> np.ndarray:
    """An array, list or torch tensor (copied to the host) as a float64 array."""
    return x.detach().cpu().double().numpy() if hasattr(x, "detach") else np.asarray(x, np.float64)


def _per_image(values: np.ndarray, image) -> np.ndarray | np.float64:
    """One value for one (H, W, 3) image, the array for a batch."""
    return values[0] if getattr(image, "ndim", 0) == 3 and image.shape[-1] == 3 else values


def psnr(x, y, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB per image: 10 log10(range^2 / MSE); inf for identical images."""
    a, b = as_batch(x), as_batch(y)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(1)
    with np.errstate(divide="ignore"):
        return _per_image(10.0 * np.log10(data_range**2 / mse), x)


def weighted_psnr(x, y, weight, data_range: float = 1.0):
    """PSNR in dB per image with each pixel's squared error weighted by its importance:

        WPSNR = 10 log10(range^2 / WMSE),   WMSE = sum_p w_p sum_c (x_pc - y_pc)^2 / (3 sum_p w_p)

    over pixels p and colour channels c. ``x``, ``y``: images as ``psnr`` takes them; ``weight``: w >= 0 per
    pixel, (H, W), (N, H, W) or (N, 1, H, W), array or tensor. lamsc's benchmarks pass ASI's segment importance
    map (each pixel the mean attention weight of the SKB segments covering it, 0 where none does:
    ``LamscModel.asi``'s ``integrated`` output, what training weights distortion by), so the figure is the PSNR
    of the parts of the image ASI deems important. Equal weights give ``psnr``. NaN for an image whose weights
    sum to 0 (nothing is important); inf for one whose pixels of positive weight are all exact. Raises
    ValueError for a negative weight.
    """
    a, b = as_batch(x), as_batch(y)
    w = _float64(weight)
    w = np.broadcast_to(w.reshape(-1, 1, *a.shape[-2:]), (a.shape[0], 1, *a.shape[-2:]))
    if (w < 0).any():
        raise ValueError("importance weights must be non-negative")
    total = w.reshape(len(a), -1).sum(1)
    wmse = (((a - b) ** 2) * w).reshape(len(a), -1).sum(1) / (a.shape[1] * np.where(total > 0, total, 1.0))
    with np.errstate(divide="ignore"):
        return _per_image(np.where(total > 0, 10.0 * np.log10(data_range**2 / wmse), np.nan), x)


def _gaussian_window() -> np.ndarray:
    g = np.exp(-((np.arange(SSIM_WINDOW) - SSIM_WINDOW // 2) ** 2) / (2 * SSIM_SIGMA**2))
    return g / g.sum()


_WINDOW = _gaussian_window().astype(np.float32)


def _filter(x: np.ndarray) -> np.ndarray:
    """The separable Gaussian window over the last two axes (H, W), valid positions only (no padding)."""
    from scipy.ndimage import correlate1d

    r = SSIM_WINDOW // 2
    x = correlate1d(x, _WINDOW, axis=-2, mode="constant")[..., r:-r, :]
    return correlate1d(x, _WINDOW, axis=-1, mode="constant")[..., r:-r]


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SSIM and its contrast-structure term, each the mean over positions per image and channel (N, C)."""
    c1, c2 = SSIM_K[0] ** 2, SSIM_K[1] ** 2  # data range 1
    x, y = x.astype(np.float32), y.astype(np.float32)  # as pytorch-msssim: float64 maps cost 3x the time
    mu_x, mu_y = _filter(x), _filter(y)
    var_x = _filter(x * x) - mu_x**2
    var_y = _filter(y * y) - mu_y**2
    cov = _filter(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * cs).mean((2, 3), dtype=np.float64), cs.mean((2, 3), dtype=np.float64)


def _halve(x: np.ndarray) -> np.ndarray:
    """2x2 average with stride 2, an odd side zero-padded by one on both ends (zeros counted in the mean)."""
    ph, pw = x.shape[2] % 2, x.shape[3] % 2
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    h, w = x.shape[2] // 2, x.shape[3] // 2
    return x[:, :, : 2 * h, : 2 * w].reshape(*x.shape[:2], h, 2, w, 2).mean((3, 5))


def ssim(x, y):
    """SSIM per image (Gaussian window 11, sigma 1.5); NaN where the short side is under 11 pixels."""
    return ssim_and_ms_ssim(x, y)[0]


def ms_ssim(x, y):
    """MS-SSIM per image (five scales, Gaussian window 11); NaN where the short side is 160 pixels or less
    (five scales do not fit), rather than a figure that would not sit beside published MS-SSIM values."""
    return ssim_and_ms_ssim(x, y)[1]


def ssim_and_ms_ssim(x, y) -> tuple:
    """(SSIM, MS-SSIM) per image, as ``ssim`` and ``ms_ssim`` give them, in one pass: MS-SSIM's first scale is
    SSIM's own computation, so a link that reports both pays for it once."""
    a, b = as_batch(x), as_batch(y)
    side = min(a.shape[-2:])
    undefined = np.full(len(a), np.nan)
    if side < SSIM_WINDOW:
        return _per_image(undefined, x), _per_image(undefined, x)
    terms, first = [], None
    for scale in range(len(MS_SSIM_WEIGHTS)):
        s, cs = _ssim_terms(a, b)
        if first is None:
            first = s.mean(1)
            if side < MS_SSIM_MIN_SIDE:
                return _per_image(first, x), _per_image(undefined, x)
        if scale < len(MS_SSIM_WEIGHTS) - 1:
            terms.append(np.maximum(cs, 0.0))
            a, b = _halve(a), _halve(b)
    terms.append(np.maximum(s, 0.0))
    weights = np.asarray(MS_SSIM_WEIGHTS).reshape(-1, 1, 1)
    return _per_image(first, x), _per_image(np.prod(np.stack(terms) ** weights, axis=0).mean(1), x)


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
