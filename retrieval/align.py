"""Putting a retrieved image over the decoded one: shift it into place and match its light.

Registration is gradient orientation correlation (Fitch, Kadyrov, Christmas and Kittler, "Orientation
correlation", BMVC 2002; Tzimiropoulos, Argyriou, Zafeiriou and Stathaki, "Robust FFT-based scale-invariant image
registration with image gradients", IEEE TPAMI 2010): each greyscale image, box-blurred over ``REGISTER_BLUR``
pixels against channel noise, becomes the complex field of its gradients' orientations, g / sqrt(|g|^2 +
``FLAT``^2) with g = dx + i dy, and the two fields are correlated for every integer shift at once by FFTs.
Orientation survives any increasing change of light (gain, offset, gamma, tint), and each pixel weighs at most
one, so an occluding object or a flat sky moves the sum by its area only, where the intensity correlation is
led by whatever has the most contrast. The shift taken maximises the sum over the overlap among shifts whose
overlap covers at least ``MIN_OVERLAP`` of the decoded view (a larger overlap is more evidence); its
``agreement`` is the same sum normalised on the overlap (1 for the same view, near 0 for another scene), the
value the receiver's acceptance threshold is set on.

Light is then matched per colour channel by a cubic tone curve, least squares on the overlap with both images
blurred over ``LIGHT_BLUR`` pixels (so the reference takes the decoded view's light without its noise), refitted
``LIGHT_ROUNDS`` times on the ``LIGHT_KEEP`` fraction of pixels it fits best, so that an occluded part of either
view does not bend the curve. A cubic follows a gamma between the views, which a gain and offset cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

REGISTER_BLUR = 3   # box side, pixels: takes the channel noise off the gradients, keeps the edges that register
FLAT = 0.01         # gradient magnitude (intensity 0-1 per pixel) below which a pixel's orientation counts less
MIN_OVERLAP = 0.5   # below this fraction of the decoded view covered, a shift is not considered
LIGHT_BLUR = 9      # box side, pixels, of the light fit (about the codec's 8 x 8 feature cell)
LIGHT_DEGREE = 3    # the tone curve's polynomial degree
LIGHT_KEEP = 0.7    # fraction of overlap pixels each refit keeps: those the last curve fits best
LIGHT_ROUNDS = 3


@dataclass
class Aligned:
    """A reference placed over the decoded view: ``image`` (H, W, 3) float32 in [0, 1], light-matched, zero
    outside the overlap; ``coverage`` (H, W) float32, 1 on the overlap; ``shift`` (dy, dx) applied to the
    reference, pixels; ``agreement``: the normalised orientation correlation at that shift, in [-1, 1] (-1 when
    no shift overlaps enough); ``overlap``: the covered fraction of the decoded view."""

    image: np.ndarray
    coverage: np.ndarray
    shift: tuple[int, int]
    agreement: float
    overlap: float


def box(a: np.ndarray, side: int) -> np.ndarray:
    """``a`` (H, W) or (H, W, C) float32 averaged over a ``side`` x ``side`` box (cut at the borders)."""
    t = torch.from_numpy(np.ascontiguousarray(a, np.float32))
    t = (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]
    # separable: a column then a row mean is the box mean, the border counts included (they factorise)
    t = F.avg_pool2d(t, (side, 1), stride=1, padding=(side // 2, 0), count_include_pad=False)
    out = F.avg_pool2d(t, (1, side), stride=1, padding=(0, side // 2), count_include_pad=False)[0]
    return (out[0] if a.ndim == 2 else out.permute(1, 2, 0)).numpy()


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def orientations(image: np.ndarray) -> np.ndarray:
    """Greyscale ``image`` (H, W) float in [0, 1] -> (H, W) complex64: g / sqrt(|g|^2 + FLAT^2), g = dx + i dy
    of the image box-blurred over REGISTER_BLUR pixels (central differences)."""
    gy, gx = np.gradient(box(image, REGISTER_BLUR))
    g = (gx + 1j * gy).astype(np.complex64)
    return g / np.sqrt(np.abs(g) ** 2 + FLAT ** 2)


def orientation_correlation(target: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every integer shift of ``moving`` (h, w) over ``target`` (H, W), greyscale float: the summed
    orientation agreement Re(sum conj(o_t) o_m) over the overlap, that sum normalised by the orientation
    energies of both sides on the overlap, and the overlap's size (pixels); three (H + h - 1, W + w - 1) maps,
    entry [dy + h - 1, dx + w - 1] for the shift (dy, dx)."""
    a, b = orientations(target), orientations(moving)
    H, W = a.shape
    h, w = b.shape
    full = (H + h - 1, W + w - 1)
    size = tuple(1 << (n - 1).bit_length() for n in full)  # powers of two: the FFTs' fast sizes
    fb = np.fft.fft2(np.conj(b[::-1, ::-1]), size)  # correlation = convolution with the flipped conjugate
    fa = np.fft.fft2(a, size)
    fea, feb = np.fft.rfft2(np.abs(a) ** 2, size), np.fft.rfft2(np.abs(b[::-1, ::-1]) ** 2, size)
    fone_a, fone_b = np.fft.rfft2(np.ones((H, W), np.float32), size), np.fft.rfft2(np.ones((h, w), np.float32), size)

    def back(spectrum, real=True):  # sums over the overlap, for all shifts
        out = np.fft.irfft2(spectrum, size) if real else np.fft.ifft2(spectrum, size).real
        return out[: full[0], : full[1]]

    total = back(fa * fb, real=False)
    energy = np.maximum(back(fea * fone_b), 0) * np.maximum(back(fone_a * feb), 0)
    n = np.round(back(fone_a * fone_b))
    norm = np.where(energy > 1e-12, total / np.sqrt(np.maximum(energy, 1e-24)), 0.0)
    return total, norm, n


def register(target: np.ndarray, moving: np.ndarray) -> tuple[tuple[int, int], float]:
    """The shift (dy, dx) putting ``moving`` onto ``target`` (greyscale float) with the largest orientation
    correlation among those covering at least MIN_OVERLAP of ``target``, and its agreement (-1 when none does)."""
    total, norm, n = orientation_correlation(target, moving)
    valid = n >= MIN_OVERLAP * target.size
    if not valid.any():
        return (0, 0), -1.0
    iy, ix = np.unravel_index(int(np.argmax(np.where(valid, total, -np.inf))), total.shape)
    return (int(iy) - moving.shape[0] + 1, int(ix) - moving.shape[1] + 1), float(norm[iy, ix])


def place(reference: np.ndarray, shift: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``reference`` (h, w, 3) moved by ``shift`` onto a canvas of ``size`` (H, W) -> (image, coverage)."""
    H, W = size
    h, w = reference.shape[:2]
    dy, dx = shift
    out = np.zeros((H, W, 3), np.float32)
    cov = np.zeros((H, W), np.float32)
    y0, x0, y1, x1 = max(dy, 0), max(dx, 0), min(dy + h, H), min(dx + w, W)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = reference[y0 - dy: y1 - dy, x0 - dx: x1 - dx]
        cov[y0:y1, x0:x1] = 1
    return out, cov


def tone_curve(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients (LIGHT_DEGREE + 1,), lowest power first, of the polynomial taking ``x`` to ``y`` (1-D
    float) in least squares, refitted LIGHT_ROUNDS times on the LIGHT_KEEP fraction it fits best."""
    powers = lambda v: np.stack([v.astype(np.float64) ** k for k in range(LIGHT_DEGREE + 1)], -1)
    X, keep = powers(x), np.ones(x.shape, bool)
    ridge = 1e-4 * np.eye(LIGHT_DEGREE + 1)  # a flat channel has no curve to fit: stay near the mean
    for _ in range(LIGHT_ROUNDS):
        Xk = X[keep]
        coef = np.linalg.solve(Xk.T @ Xk + ridge * len(Xk), Xk.T @ y[keep])
        err = np.abs(X @ coef - y)
        keep = err <= np.quantile(err, LIGHT_KEEP)
    return coef


def match_light(decoded: np.ndarray, placed: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """``placed`` (H, W, 3) float with each channel's tone curve fitted to ``decoded`` on the overlap."""
    db, rb = box(decoded, LIGHT_BLUR), box(placed, LIGHT_BLUR)
    inner = box(coverage, LIGHT_BLUR) > 0.999  # the blurred reference mixes in the zeros near the overlap's edge
    fit = inner if inner.sum() > 64 else coverage > 0
    out = np.zeros_like(placed)
    for c in range(3):
        coef = tone_curve(rb[..., c][fit], db[..., c][fit])
        out[..., c] = np.clip(np.polynomial.polynomial.polyval(placed[..., c], coef), 0, 1) * coverage
    return out


def align(decoded: np.ndarray, reference: np.ndarray) -> Aligned:
    """Register ``reference`` (h, w, 3) uint8 onto ``decoded`` (H, W, 3) uint8 and match its light."""
    d = decoded.astype(np.float32) / 255.0
    r = reference.astype(np.float32) / 255.0
    shift, agreement = register(grey(d), grey(r))
    placed, cov = place(r, shift, d.shape[:2])
    if agreement <= -1.0:
        return Aligned(placed * 0, cov * 0, shift, -1.0, 0.0)
    return Aligned(match_light(d, placed, cov), cov, shift, agreement, float(cov.mean()))


COMPOSITE_BLUR = 9  # box side, pixels, over which a reference's disagreement with the decoded view is averaged


def composite(decoded: np.ndarray, aligned: list[Aligned]) -> tuple[np.ndarray, np.ndarray]:
    """One reference made of several placed over ``decoded`` (H, W, 3) uint8 -> (image (H, W, 3) float32 in
    [0, 1], coverage (H, W) float32): at each pixel the reference that covers it and disagrees least with the
    decoded view there (mean absolute difference over COMPOSITE_BLUR pixels, both lightly blurred against noise),
    so one view's occluded or uncovered part is filled from another's. One reference comes back as it is."""
    if len(aligned) == 1:
        return aligned[0].image, aligned[0].coverage
    d = box(decoded.astype(np.float32) / 255.0, REGISTER_BLUR)
    cost = np.stack([np.where(a.coverage > 0, box(np.abs(box(a.image, REGISTER_BLUR) - d).mean(-1), COMPOSITE_BLUR),
                              np.inf) for a in aligned])
    pick = np.argmin(cost, 0)
    image = np.take_along_axis(np.stack([a.image for a in aligned]), pick[None, ..., None], 0)[0]
    coverage = np.max(np.stack([a.coverage for a in aligned]), 0)
    return image * coverage[..., None], coverage
