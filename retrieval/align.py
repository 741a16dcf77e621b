"""Putting a retrieved image over the decoded one: shift it into place and match its light.

Registration is masked normalised cross-correlation (Padfield, "Masked object registration in the Fourier
domain", IEEE TIP 2012): for every integer shift at once, by FFTs, the correlation of the two greyscale images
(each box-blurred over ``REGISTER_BLUR`` pixels against channel noise) over their overlap only, each side made
zero-mean and unit-variance there. The shift taken is the best one whose overlap covers at least
``MIN_OVERLAP`` of the decoded view, and its correlation is the ``agreement`` the receiver's acceptance
threshold is set on. Being normalised on the overlap, it is blind to a change of gain and offset (light).

Light is then matched per colour channel by a least-squares gain and offset fitted on the overlap with both
images blurred over ``LIGHT_BLUR`` pixels, so a relit reference takes the decoded view's light without its noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

REGISTER_BLUR = 7  # box side, pixels: takes the channel noise off without losing the detail that registers
LIGHT_BLUR = 9     # box side, pixels, of the light fit (about the codec's 8 x 8 feature cell)
MIN_OVERLAP = 0.5  # below this fraction of the decoded view covered, a shift is not considered


@dataclass
class Aligned:
    """A reference placed over the decoded view: ``image`` (H, W, 3) float32 in [0, 1], light-matched, zero
    outside the overlap; ``coverage`` (H, W) float32, 1 on the overlap; ``shift`` (dy, dx) applied to the
    reference, pixels; ``agreement``: the masked NCC at that shift, in [-1, 1] (-1 when no shift overlaps
    enough); ``overlap``: the covered fraction of the decoded view."""

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


def masked_ncc(target: np.ndarray, moving: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NCC over the overlap and the overlap's size (pixels) for every integer shift of ``moving`` (h, w) over
    ``target`` (H, W), greyscale float: two (H + h - 1, W + w - 1) maps, entry [dy + h - 1, dx + w - 1] for
    the shift (dy, dx)."""
    H, W = target.shape
    h, w = moving.shape
    full = (H + h - 1, W + w - 1)
    size = tuple(1 << (n - 1).bit_length() for n in full)  # powers of two: the FFTs' fast sizes
    # float32 halves the FFTs' work; centring each image first keeps the variances' cancellation well conditioned
    a = (target - target.mean()).astype(np.float32)
    b = (moving - moving.mean()).astype(np.float32)[::-1, ::-1]  # correlation = convolution, flipped
    fa, faa, fone_a = (np.fft.rfft2(x, size) for x in (a, a * a, np.ones_like(a)))
    fb, fbb, fone_b = (np.fft.rfft2(x, size) for x in (b, b * b, np.ones_like(b)))

    def back(spectrum):  # sums over the overlap, for all shifts
        return np.fft.irfft2(spectrum, size)[: full[0], : full[1]]

    n = np.round(back(fone_a * fone_b)).astype(np.float64)
    sa, sb, sab = (back(x).astype(np.float64) for x in (fa * fone_b, fone_a * fb, fa * fb))
    saa, sbb = (back(x).astype(np.float64) for x in (faa * fone_b, fone_a * fbb))
    nn = np.maximum(n, 1)
    cov = sab - sa * sb / nn
    var = np.maximum(saa - sa * sa / nn, 0) * np.maximum(sbb - sb * sb / nn, 0)
    ncc = np.where(var > 1e-9 * nn * nn, cov / np.sqrt(np.maximum(var, 1e-30)), 0.0)
    return ncc, n


def register(target: np.ndarray, moving: np.ndarray) -> tuple[tuple[int, int], float]:
    """The shift (dy, dx) putting ``moving`` onto ``target`` (greyscale float) with the highest masked NCC
    among those covering at least MIN_OVERLAP of ``target``, and that NCC (-1 when none does)."""
    ncc, n = masked_ncc(box(target, REGISTER_BLUR), box(moving, REGISTER_BLUR))
    ncc = np.where(n >= MIN_OVERLAP * target.size, ncc, -1.0)
    iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
    return (int(iy) - moving.shape[0] + 1, int(ix) - moving.shape[1] + 1), float(ncc[iy, ix])


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


def match_light(decoded: np.ndarray, placed: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """``placed`` (H, W, 3) float with each channel's gain and offset fitted to ``decoded`` on the overlap."""
    db, rb = box(decoded, LIGHT_BLUR), box(placed, LIGHT_BLUR)
    inner = box(coverage, LIGHT_BLUR) > 0.999  # the blurred reference mixes in the zeros near the overlap's edge
    fit = inner if inner.sum() > 64 else coverage > 0
    out = np.zeros_like(placed)
    for c in range(3):
        x, y = rb[..., c][fit], db[..., c][fit]
        var = x.var()
        gain = float(np.clip(((x - x.mean()) * (y - y.mean())).mean() / var, 0.25, 4.0)) if var > 1e-8 else 0.0
        out[..., c] = np.clip(gain * (placed[..., c] - x.mean()) + y.mean(), 0, 1) * coverage
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
