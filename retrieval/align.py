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
``agreement`` is the same sum normalised on the overlap (1 for the same view, near 0 for another scene). Its
``sharpness`` is the peak-to-sidelobe ratio of the normalised map (Bolme, Beveridge, Draper and Lui, "Visual
object tracking using adaptive correlation filters", CVPR 2010): the agreement's distance above the mean of the
other valid shifts, more than ``SIDELOBE_GAP`` pixels from it, in their standard deviations. Another scene can
agree as well as a poorly overlapping view of the same one where its textures line up, but then nearby shifts
agree almost as well; the same scene peaks at one shift. The receiver accepts on
``score = agreement + w x sharpness``, both the weight and the threshold set on held-out views.

Light is then matched per colour channel by a cubic tone curve, least squares on the overlap with both images
blurred over ``LIGHT_BLUR`` pixels (so the reference takes the decoded view's light without its noise), refitted
``LIGHT_ROUNDS`` times on the ``LIGHT_KEEP`` fraction of pixels it fits best (every ``LIGHT_STRIDE``-th pixel
each way: the blurred images hardly change in between), so that an occluded part of either view does not bend
the curve. A cubic follows a gamma between the views, which a gain and offset cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

from lamsc.semcom.images import LUMA

REGISTER_BLUR = 3   # box side, pixels: takes the channel noise off the gradients, keeps the edges that register
FLAT = 0.01         # gradient magnitude (intensity 0-1 per pixel) below which a pixel's orientation counts less
MIN_OVERLAP = 0.5   # below this fraction of the decoded view covered, a shift is not considered
SIDELOBE_GAP = 5    # pixels each way around the peak left out of the sidelobe (MOSSE's 11 x 11 window)
LIGHT_BLUR = 9      # box side, pixels, of the light fit (about the codec's 8 x 8 feature cell)
LIGHT_DEGREE = 3    # the tone curve's polynomial degree
LIGHT_KEEP = 0.7    # fraction of overlap pixels each refit keeps: those the last curve fits best
LIGHT_ROUNDS = 3
LIGHT_STRIDE = 3    # the curve is fitted on every 3rd pixel each way of the blurred overlap


@dataclass
class Aligned:
    """A reference placed over the decoded view: ``image`` (H, W, 3) float32 in [0, 1], light-matched, zero
    outside the overlap (None for a reference registered but not accepted: its light is never matched);
    ``coverage`` (H, W) float32, 1 on the overlap; ``shift`` (dy, dx) applied to the
    reference, pixels; ``agreement``: the normalised orientation correlation at that shift, in [-1, 1] (-1 when
    no shift overlaps enough); ``overlap``: the covered fraction of the decoded view; ``sharpness``: the peak's
    ratio to its sidelobe (0 when too few other shifts are valid); ``score``: agreement + w x sharpness at the
    weight ``align_all`` was given, what a receiver's threshold applies to."""

    image: np.ndarray | None
    coverage: np.ndarray
    shift: tuple[int, int]
    agreement: float
    overlap: float
    sharpness: float = 0.0
    score: float = -1.0


def box(a: np.ndarray, side: int) -> np.ndarray:
    """``a`` (H, W) or (H, W, C) float averaged over a ``side`` x ``side`` box, ``side`` odd, the box cut at the
    borders (the mean of the pixels it still covers) -> float32 of the same shape."""
    if side % 2 == 0:
        raise ValueError(f"a box of side {side}: give an odd side, so the box is centred on its pixel")
    out = np.asarray(a, np.float64)
    for axis in (0, 1):  # separable: a column then a row mean is the box mean, the border counts included
        n, r = out.shape[axis], side // 2
        sums = np.concatenate([np.zeros_like(np.take(out, [0], axis)), np.cumsum(out, axis)], axis)
        i = np.arange(n)
        hi, lo = np.minimum(i + r + 1, n), np.maximum(i - r, 0)
        shape = [1] * out.ndim
        shape[axis] = n
        out = (np.take(sums, hi, axis) - np.take(sums, lo, axis)) / (hi - lo).reshape(shape)
    return out.astype(np.float32)


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) @ np.array(LUMA, np.float32)


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
    return next(orientation_correlations(target, [moving]))


def orientation_correlations(target: np.ndarray, movings: list[np.ndarray]):
    """``orientation_correlation(target, m)`` for each of ``movings`` in turn (a generator), the target's
    transforms computed once and the overlap counts once per size."""
    a = orientations(target)
    H, W = a.shape
    spectra: dict = {}  # per moving size: FFT size, the target's three spectra, the ones' spectrum, overlap counts
    for moving in movings:
        b = orientations(moving)
        h, w = b.shape
        if (h, w) not in spectra:
            full = (H + h - 1, W + w - 1)
            size = tuple(1 << (n - 1).bit_length() for n in full)  # powers of two: the FFTs' fast sizes
            one_b = fft.rfft2(np.ones((h, w), np.float32), size)
            fa, fea = fft.fft2(a, size), fft.rfft2(np.abs(a) ** 2, size)
            fone_a = fft.rfft2(np.ones((H, W), np.float32), size)
            n = np.round(fft.irfft2(fone_a * one_b, size)[: full[0], : full[1]])
            spectra[(h, w)] = (full, size, fa, fea, fone_a, one_b, n)
        full, size, fa, fea, fone_a, one_b, n = spectra[(h, w)]
        cut = (slice(0, full[0]), slice(0, full[1]))
        flipped = b[::-1, ::-1]
        # correlation = convolution with the flipped conjugate; the FFTs in single precision, as the inputs are
        total = fft.ifft2(fa * fft.fft2(np.conj(flipped), size))[cut].real.astype(np.float64)
        energy = (np.maximum(fft.irfft2(fea * one_b, size)[cut], 0).astype(np.float64)
                  * np.maximum(fft.irfft2(fone_a * fft.rfft2(np.abs(flipped) ** 2, size), size)[cut], 0))
        norm = np.where(energy > 1e-12, total / np.sqrt(np.maximum(energy, 1e-24)), 0.0)
        yield total, norm, n


def register_all(target: np.ndarray, movings: list[np.ndarray]) -> list[tuple[tuple[int, int], float, float]]:
    """For each of ``movings``: the shift (dy, dx) putting it onto ``target`` (greyscale float) with the largest
    orientation correlation among those covering at least MIN_OVERLAP of ``target``, its agreement (-1 when none
    does) and its sharpness (``peak_to_sidelobe``); the target's transforms computed once."""
    out = []
    for moving, (total, norm, n) in zip(movings, orientation_correlations(target, movings)):
        valid = n >= MIN_OVERLAP * target.size
        if not valid.any():
            out.append(((0, 0), -1.0, 0.0))
            continue
        iy, ix = np.unravel_index(int(np.argmax(np.where(valid, total, -np.inf))), total.shape)
        out.append(((int(iy) - moving.shape[0] + 1, int(ix) - moving.shape[1] + 1), float(norm[iy, ix]),
                    peak_to_sidelobe(norm, valid, (int(iy), int(ix)))))
    return out


def score(agreement: float, sharpness: float, weight: float) -> float:
    """What a receiver's acceptance threshold applies to: ``agreement`` + ``weight`` x ``sharpness``."""
    return agreement + weight * sharpness


def peak_to_sidelobe(norm: np.ndarray, valid: np.ndarray, peak: tuple[int, int]) -> float:
    """(norm[peak] - mean) / std of ``norm`` over the ``valid`` entries more than SIDELOBE_GAP from ``peak``
    along either axis; 0 when fewer than 8 such entries are left or they are constant."""
    side = valid.copy()
    y, x = peak
    side[max(y - SIDELOBE_GAP, 0): y + SIDELOBE_GAP + 1, max(x - SIDELOBE_GAP, 0): x + SIDELOBE_GAP + 1] = False
    lobe = norm[side]
    if lobe.size < 8 or lobe.std() < 1e-9:
        return 0.0
    return float((norm[peak] - lobe.mean()) / lobe.std())


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
    sparse = np.zeros_like(fit)
    sparse[::LIGHT_STRIDE, ::LIGHT_STRIDE] = True  # the blurred images change little within a few pixels
    fit = fit & sparse if (fit & sparse).sum() > 64 else fit
    out = np.zeros_like(placed)
    for c in range(3):
        coef = tone_curve(rb[..., c][fit], db[..., c][fit])
        out[..., c] = np.clip(np.polynomial.polynomial.polyval(placed[..., c], coef), 0, 1) * coverage
    return out


def align(decoded: np.ndarray, reference: np.ndarray) -> Aligned:
    """Register ``reference`` (h, w, 3) uint8 onto ``decoded`` (H, W, 3) uint8 and match its light."""
    return align_all(decoded, [reference])[0]


def align_all(decoded: np.ndarray, references: list[np.ndarray], accept: float = -1.0,
              sharpness_weight: float = 0.0) -> list[Aligned]:
    """``align(decoded, r)`` for each of ``references``, the decoded view's transforms computed once, each scored
    agreement + ``sharpness_weight`` x sharpness; the light is matched only on references registered at all
    (agreement above -1) whose score reaches ``accept`` (a receiver's threshold: it uses no other), the rest come
    back registered with ``image`` None."""
    d = decoded.astype(np.float32) / 255.0
    rs = [r.astype(np.float32) / 255.0 for r in references]
    out = []
    for r, (shift, agreement, sharpness) in zip(rs, register_all(grey(d), [grey(r) for r in rs])):
        placed, cov = place(r, shift, d.shape[:2])
        if agreement <= -1.0:
            out.append(Aligned(None, cov * 0, shift, -1.0, 0.0))
        else:
            scored = score(agreement, sharpness, sharpness_weight)
            image = match_light(d, placed, cov) if scored >= accept else None
            out.append(Aligned(image, cov, shift, agreement, float(cov.mean()), sharpness, scored))
    return out


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
