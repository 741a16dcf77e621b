"""SoftCast (Jakubczak & Katabi, "A Cross-Layer Design for Scalable Mobile Video", MobiCom 2011): linear
analog transmission of DCT coefficients, the reference any learned analog scheme must clear.

Transmitter: an orthonormal colour transform (one luma and two opponent chroma axes, so that the squared
error the decoder minimises is the RGB error PSNR measures), each plane's mean removed, a full-frame 2-D
DCT (orthonormal), the coefficients of each plane cut into G x G chunks. Each chunk's variance lambda (mean
square) is quantised upwards to 2^(1/4) steps and sent as metadata; the chunks of largest variance are kept
while their values and metadata fit the channel uses (the rest are dropped, as SoftCast drops chunks when
bandwidth is short), and chunk i is scaled by g_i = lambda_i^(-1/4) sqrt(P / sum_j m_j sqrt(lambda_j)), the
power allocation that minimises the decoder's error at total power P (one per value: unit-power symbols).
Values cross two per complex channel use. G is the grid (4 to 64 chunks a side) whose predicted error is
least.

Receiver: the LLSE (linear least-squares) estimate per coefficient, x = g lambda / (g^2 lambda + N0) y,
zero for dropped chunks, then the inverse DCT, means and colour transform.

Metadata (a header with the grid, image size and plane means; the bitmap of kept chunks; 8 bits per kept
chunk's variance) crosses as lamsc's own side information does: digitally, at the coded rate of the MCS for
the SNR (lamsc.semcom.mcs.side_channel_uses), counted in the channel uses and in ``side_bits``. SoftCast's
Hadamard spreading across packets protects against packet loss, which these channels do not have, and does not
change the LLSE error on them: it is left out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.fft import dctn, idctn

from lamsc.semcom import metrics
from lamsc.semcom.channels import Channel, analog_real
from lamsc.semcom.mcs import analog_channel_uses, side_channel_uses
from lamsc.semcom.transmission import LinkResult, Reconstruction, lost_image

# Orthonormal rows: luma, red-blue, green-magenta. Orthonormal, so squared error is the same in RGB.
COLOUR = np.array([[1, 1, 1], [1, 0, -1], [1, -2, 1]], np.float64) / np.sqrt([[3.0], [2.0], [6.0]])
GRIDS = (4, 8, 16, 32, 64)
HEADER_BITS = 3 + 2 * 16 + 3 * 16  # the grid's index, height and width, three plane means (16-bit fixed point)
VARIANCE_BITS = 8             # per kept chunk: log2(lambda) in quarter steps, offset by LOG_OFFSET
LOG_OFFSET = 96               # codes 1..255 cover lambda from 2^-23.75 to 2^39.75 (pixel units squared)


@dataclass
class Plan:
    """What the transmitter decided: ``grid`` G, chunk ``bounds`` per axis, per chunk (planes x G x G) the
    quantised variance ``variance`` and whether it is ``kept``, the ``gains`` of the kept chunks, and the
    ``side_bits`` and ``values`` (real values sent) it costs."""

    grid: int
    rows: np.ndarray
    cols: np.ndarray
    variance: np.ndarray    # (3, G, G) float64, quantised upwards; 0 for an all-zero chunk
    kept: np.ndarray        # (3, G, G) bool
    gains: np.ndarray       # (3, G, G) float64, 0 where not kept
    side_bits: int
    values: int
    predicted_mse: float    # per coefficient, pixel units squared


def quantise_variance(lam: np.ndarray) -> np.ndarray:
    """Chunk variances rounded up to the 8-bit metadata's grid of 2^(1/4) steps (0 stays 0), so the power
    the transmitter computes from them is never below what it sends."""
    code = np.clip(np.ceil(4 * np.log2(np.maximum(lam, 1e-300))) + LOG_OFFSET, 1, 255)
    return np.where(lam > 0, 2.0 ** ((code - LOG_OFFSET) / 4), 0.0)


def chunk_sizes(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(G, G) values per chunk from the chunk boundaries along each axis."""
    return np.outer(np.diff(rows), np.diff(cols))


def power_gains(variance: np.ndarray, sizes: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """g_i = lambda_i^(-1/4) sqrt(P / sum_j m_j sqrt(lambda_j)) over kept chunks, P = sum_j m_j: unit mean power
    per value sent (Jakubczak & Katabi 2011, section 3.2)."""
    m = np.broadcast_to(sizes, variance.shape)
    total = (m * kept).sum()
    norm = (m * np.sqrt(variance) * kept).sum()
    g = np.zeros_like(variance)
    np.divide(np.sqrt(total / norm) if norm > 0 else 0.0, variance ** 0.25, out=g, where=kept & (variance > 0))
    return g


def llse(y: np.ndarray, gain: np.ndarray, variance: np.ndarray, noise_var: float) -> np.ndarray:
    """The LLSE estimate of zero-mean coefficients of prior variance ``variance`` from y = gain x + n, n of
    variance ``noise_var``: gain variance / (gain^2 variance + noise_var) y (elementwise, broadcast)."""
    return gain * variance / (gain**2 * variance + noise_var) * y


def plan(coeffs: np.ndarray, channel_uses: int, channel: Channel, grid: int) -> Plan | None:
    """The chunks of (3, H, W) ``coeffs`` to send at ``grid`` within ``channel_uses`` over ``channel`` (its noise
    variance sets the error, its SNR the metadata's rate); None when the metadata alone does not fit."""
    _, h, w = coeffs.shape
    rows = np.linspace(0, h, min(grid, h) + 1).round().astype(int)
    cols = np.linspace(0, w, min(grid, w) + 1).round().astype(int)
    gr, gc = len(rows) - 1, len(cols) - 1
    sq = np.add.reduceat(np.add.reduceat(coeffs**2, rows[:-1], axis=1), cols[:-1], axis=2)
    sizes = chunk_sizes(rows, cols)
    variance = quantise_variance(sq / sizes)
    order = np.argsort(-(variance * sizes).reshape(-1), kind="stable")  # most energy first
    m = np.broadcast_to(sizes, variance.shape).reshape(-1)[order]
    fixed = HEADER_BITS + 3 * gr * gc
    # kept chunks k: values sum(m[:k]) two per use, metadata fixed + 8k bits at the side information's rate
    cost = np.ceil(np.cumsum(m) / 2) + side_channel_uses(fixed + VARIANCE_BITS * np.arange(1, len(m) + 1),
                                                         channel.snr_db)
    live = variance.reshape(-1)[order] > 0
    count = int(np.searchsorted(cost, channel_uses, side="right"))
    if side_channel_uses(fixed, channel.snr_db) > channel_uses:
        return None
    kept = np.zeros(variance.size, bool)
    kept[order[:count][live[:count]]] = True
    kept = kept.reshape(variance.shape)
    gains, noise_var = power_gains(variance, sizes, kept), channel.noise_variance
    mm = np.broadcast_to(sizes, variance.shape)
    err = np.where(kept, mm * variance * noise_var / (gains**2 * variance + noise_var + 1e-300), sq)
    values = int((mm * kept).sum())
    side = fixed + VARIANCE_BITS * int(kept.sum())
    return Plan(grid, rows, cols, variance, kept, gains, side, values, float(err.sum() / coeffs.size))


def expand(per_chunk: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(3, G, G) per-chunk numbers -> (3, H, W), each coefficient given its chunk's."""
    return np.repeat(np.repeat(per_chunk, np.diff(rows), axis=1), np.diff(cols), axis=2)


def forward(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 -> DCT coefficients (3, H, W) of the mean-free colour planes, and the means (3,)."""
    planes = np.einsum("ij,hwj->ihw", COLOUR, image.astype(np.float64))
    means = planes.mean(axis=(1, 2))
    return dctn(planes - means[:, None, None], axes=(1, 2), norm="ortho"), means


def inverse(coeffs: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Inverse of ``forward``, rounded and clipped to uint8 (H, W, 3)."""
    planes = idctn(coeffs, axes=(1, 2), norm="ortho") + means[:, None, None]
    return np.clip(np.einsum("ji,jhw->hwi", COLOUR, planes).round(), 0, 255).astype(np.uint8)


def quantise_means(means: np.ndarray) -> np.ndarray:
    """Plane means as the header's 16-bit fixed point over [-256 sqrt 3, 256 sqrt 3)."""
    step = 512 * math.sqrt(3) / 2**16
    return np.round(means / step) * step


def best_plan(coeffs: np.ndarray, channel_uses: int, channel: Channel) -> Plan | None:
    """The plan over GRIDS of least predicted error; None when no grid's metadata fits ``channel_uses``."""
    plans = [p for g in GRIDS if (p := plan(coeffs, channel_uses, channel, g)) is not None]
    return min(plans, key=lambda p: p.predicted_mse, default=None)


def send_chunks(coeffs: np.ndarray, p: Plan, channel: Channel, generator: torch.Generator | None = None) -> np.ndarray:
    """The kept chunks of (3, H, W) ``coeffs`` scaled by their gains, across ``channel`` two values per use, and
    the receiver's LLSE estimate of every coefficient (zero where dropped), (3, H, W) float64."""
    gains, variance, kept = (expand(a, p.rows, p.cols) for a in (p.gains, p.variance, p.kept))
    sent = (gains * coeffs)[kept]
    received = sent
    if sent.size:
        received = analog_real(torch.from_numpy(sent)[None].float(), channel, generator)[0].double().numpy()
    estimate = np.zeros_like(coeffs)
    estimate[kept] = llse(received, gains[kept], variance[kept], channel.noise_variance)
    return estimate


def softcast(image: np.ndarray, channel_uses: int, channel: Channel, seed: int | None = None) -> LinkResult:
    """SoftCast of (H, W, 3) uint8 ``image`` in at most ``channel_uses`` complex uses over ``channel`` (awgn
    or rayleigh; the LLSE assumes the channel's nominal noise variance), noise seeded by ``seed``. A lost row
    (too few channel uses for the metadata) says so. Raises ValueError on a digital channel."""
    if channel.digital:
        raise ValueError("SoftCast is analog: give it an analog channel (awgn, rayleigh)")
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    coeffs, means = forward(image)
    p = best_plan(coeffs, channel_uses, channel)
    if p is None:
        why = f"{channel_uses} channel uses cannot carry SoftCast's metadata"
        rec = lost_image(h, w, why)
        return _result(image, rec, 0, 0, why, t0)
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    rec = Reconstruction(inverse(send_chunks(coeffs, p, channel, g), quantise_means(means)))
    uses = analog_channel_uses(p.values, p.side_bits, channel.snr_db)
    detail = (f"grid {p.grid}x{p.grid} per plane, {int(p.kept.sum())}/{p.kept.size} chunks kept, "
              f"{p.values} values, {p.side_bits} metadata bits")
    return _result(image, rec, p.side_bits, uses, detail, t0)


def _result(image: np.ndarray, rec: Reconstruction, side_bits: int, uses: int, detail: str, t0: float) -> LinkResult:
    h, w = image.shape[:2]
    return LinkResult("softcast", rec, side_bits, uses, uses / (3 * h * w), 1.0,
                      float(metrics.psnr(image, rec.image)),
                      *map(float, metrics.ssim_and_ms_ssim(image, rec.image)), 0, {"link": time.perf_counter() - t0},
                      link="analog", side_bits=side_bits, detail=detail)
