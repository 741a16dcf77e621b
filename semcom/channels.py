"""Channels: analog (AWGN, Rayleigh block fading) on symbols, and digital on the payload's bits.

The analog channels take NumPy arrays (the link a deployment simulates, noise from a NumPy Generator) or
torch tensors (training, differentiable, noise from a torch Generator on the tensors' device): one model,
either library's arrays.

Analog symbols follow the textbook model: the transmitter normalises its complex symbols to unit average
power and the channel adds circular complex Gaussian noise of variance 10^(-SNR/10) (half per real
dimension). Real feature values are paired into complex symbols, so a real vector with unit mean square
becomes symbols of unit average power and sees noise of variance 10^(-SNR/10) per real value.

The digital mode maps the payload bits onto BPSK/QPSK/16-QAM with Sionna's Gray-coded mapper, passes
them through AWGN or Rayleigh block fading (perfect CSI at the receiver) and hard-demaps them: the bit
errors are whatever that link makes, and the payload's CRC then decides if the image arrived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lamsc.errors import UserError

MODULATION_BITS = {"bpsk": 1, "qpsk": 2, "16qam": 4}
ANALOG = ("awgn", "rayleigh", "rayleigh-noeq")
DIGITAL = tuple(f"digital-{m}{f}" for m in MODULATION_BITS for f in ("", "-rayleigh"))
CHANNELS = ANALOG + DIGITAL


@dataclass(frozen=True)
class Channel:
    """A channel by name (see CHANNELS) at an SNR in dB (Es/N0 per complex symbol)."""

    name: str
    snr_db: float
    block_len: int | None = None  # Rayleigh coherence block in symbols; None = one block per transmission

    def __post_init__(self) -> None:
        if self.name not in CHANNELS:
            raise UserError(f"unknown channel {self.name!r}; choose one of {', '.join(CHANNELS)}")
        if not math.isfinite(self.snr_db):
            raise UserError(f"an SNR of {self.snr_db} dB: give a finite one (a noise-free link is a high SNR, "
                            "e.g. 40 dB)")

    @property
    def digital(self) -> bool:
        return self.name.startswith("digital-")

    @property
    def fading(self) -> bool:
        return "rayleigh" in self.name

    @property
    def bits_per_symbol(self) -> int:
        return MODULATION_BITS[self.name.split("-")[1]] if self.digital else 0

    @property
    def noise_variance(self) -> float:
        return 10.0 ** (-self.snr_db / 10.0)


def analog_form(channel: Channel) -> Channel:
    """The analog channel under a link that brings its own modulation (a coded link, a baseline): the same
    kind (AWGN, or Rayleigh equalised) at the same SNR. A digital or unequalised channel names lamsc's own
    uncoded modulation, which such a link replaces."""
    return Channel("rayleigh" if channel.fading else "awgn", channel.snr_db, channel.block_len)


def to_symbols(x):
    """Real (B, N) -> complex (B, ceil(N/2)); unit mean-square reals give unit-power symbols."""
    b, n = x.shape
    if isinstance(x, np.ndarray):
        pairs = np.pad(x, ((0, 0), (0, n % 2))).reshape(b, -1, 2)
        return (pairs[..., 0] + 1j * pairs[..., 1]) / np.float32(math.sqrt(2.0))
    import torch  # a tensor: torch is there

    pairs = torch.nn.functional.pad(x, (0, n % 2)).reshape(b, -1, 2)
    return torch.complex(pairs[..., 0], pairs[..., 1]) / math.sqrt(2.0)


def from_symbols(s, n: int):
    """Inverse of to_symbols, keeping the first n reals."""
    if isinstance(s, np.ndarray):
        return (np.stack([s.real, s.imag], -1).reshape(s.shape[0], -1) * np.float32(math.sqrt(2.0)))[:, :n]
    import torch

    return (torch.stack([s.real, s.imag], -1).reshape(s.shape[0], -1) * math.sqrt(2.0))[:, :n]


def analog(symbols, channel: Channel, generator=None, snr_db=None):
    """Pass complex symbols (B, N) through AWGN or Rayleigh block fading; differentiable in torch symbols.

    The symbols are the modulated bits on a digital channel, the paired feature values on an analog one.
    ``generator``: a numpy.random.Generator for arrays, a torch.Generator for tensors (None: fresh entropy).
    ``snr_db`` (B,), where given, is each row's SNR in place of the channel's (a training batch draws one per
    image).
    """
    b, n = symbols.shape
    if snr_db is None:
        variance = channel.noise_variance
    else:
        variance = (10.0 ** (-snr_db.astype(np.float32) / 10.0) if isinstance(snr_db, np.ndarray)
                    else 10.0 ** (-snr_db.float() / 10.0)).reshape(b, 1)
    noise = _complex_normal(symbols, (b, n), variance, generator)
    if not channel.fading:
        return symbols + noise
    block = channel.block_len or n
    gains = _complex_normal(symbols, (b, math.ceil(n / block)), 1.0, generator)
    if isinstance(gains, np.ndarray):
        h = np.repeat(gains, block, axis=1)[:, :n]
    else:
        h = gains.repeat_interleave(block, dim=1)[:, :n]
    received = h * symbols + noise
    if channel.name == "rayleigh-noeq":
        return received
    return received / h  # zero-forcing with perfect channel knowledge: noise grows where |h| is small


def analog_real(x, channel: Channel, generator=None, snr_db=None):
    """``analog`` for real values (B, N) with unit mean square, as pairs of reals in complex symbols."""
    return from_symbols(analog(to_symbols(x), channel, generator, snr_db), x.shape[1])


def _complex_normal(like, shape, variance, generator):
    """Circular complex Gaussian noise of ``variance`` (half per real dimension), in ``like``'s library."""
    std = (variance / 2.0) ** 0.5
    if isinstance(like, np.ndarray):
        rng = generator if generator is not None else np.random.default_rng()
        re = rng.standard_normal(shape, np.float32)
        im = rng.standard_normal(shape, np.float32)
        return (re * std + 1j * (im * std)).astype(np.complex64)
    import torch

    re = torch.randn(shape, device=like.device, generator=generator) * std
    im = torch.randn(shape, device=like.device, generator=generator) * std
    return torch.complex(re, im)


def transmit_bits(payload: bytes, channel: Channel, seed: int | None = None) -> tuple[bytes, int]:
    """Send ``payload`` over a digital channel; return the bytes the receiver decides and the bit errors."""
    if not channel.digital:
        raise ValueError("an analog channel carries symbols: use analog")
    import torch
    from sionna.phy.mapping import Demapper, Mapper

    k = channel.bits_per_symbol
    kind = "pam" if k == 1 else "qam"
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))
    pad = (-len(bits)) % k
    tx_bits = torch.from_numpy(np.concatenate([bits, np.zeros(pad, np.uint8)]).astype(np.float32))[None]
    x = Mapper(kind, k)(tx_bits)  # unit average energy constellation, Gray coded
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    y = analog(x.to(torch.complex64), channel, g)  # Rayleigh: already equalised with perfect CSI
    # Hard decisions are minimum-distance decisions: the noise level given to the demapper cannot change them.
    rx_bits = Demapper("maxlog", kind, k, hard_out=True)(y, torch.tensor(channel.noise_variance))
    rx = rx_bits.reshape(-1)[: len(bits)].to(torch.uint8).numpy()
    errors = int((rx != bits).sum())
    return np.packbits(rx).tobytes(), errors

