"""Channels against closed forms: measured SNR, BER of BPSK/QPSK on AWGN and BPSK on Rayleigh."""

import math
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.special import erfc

from lamsc.errors import UserError
from lamsc.semcom.channels import Channel, analog, analog_real, from_symbols, to_symbols, transmit_bits
from lamsc.semcom.mcs import MCS_TABLE, channel_uses, choose_mcs, side_channel_uses


def q(x):
    return 0.5 * erfc(x / math.sqrt(2))


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_awgn_measured_snr_matches_requested(snr):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 100_000, generator=g)
    x = x / x.pow(2).mean(1, keepdim=True).sqrt()  # unit mean square, as the transmitter normalises
    s = to_symbols(x)
    y = analog(s, Channel("awgn", snr), g)
    measured = 10 * math.log10(s.abs().pow(2).mean() / (y - s).abs().pow(2).mean())
    assert measured == pytest.approx(snr, abs=0.05)
    assert s.abs().pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)


def test_real_pairs_round_trip():
    x = torch.randn(3, 11)
    assert torch.allclose(from_symbols(to_symbols(x), 11), x, atol=1e-6)


def test_rayleigh_equalised_noise_follows_the_fade():
    g = torch.Generator().manual_seed(1)
    s = to_symbols(torch.ones(1, 400_000))
    y = analog(s, Channel("rayleigh", 10.0, block_len=1), g)
    # Error power after zero-forcing is |n|^2 / |h|^2, a ratio of two independent exponentials
    # (means 0.1 and 1) whose CDF is x / (x + 0.1): its median is the noise variance, 0.1.
    err = (y - s).abs().pow(2)
    assert float(err.median()) == pytest.approx(0.1, rel=0.03)
    noeq = analog(s, Channel("rayleigh-noeq", 10.0, block_len=1), g)
    assert float((noeq - s).abs().pow(2).mean()) > 1.0  # unequalised phase rotation destroys the symbols


@pytest.mark.parametrize("name,snr,ber", [
    ("digital-bpsk", 4.0, lambda g: q(math.sqrt(2 * g))),
    ("digital-qpsk", 7.0, lambda g: q(math.sqrt(g))),
    ("digital-bpsk-rayleigh", 6.0, lambda g: 0.5 * (1 - math.sqrt(g / (1 + g)))),
])
def test_digital_ber_matches_closed_form(name, snr, ber):
    payload = os.urandom(40_000)
    channel = Channel(name, snr, block_len=1 if "rayleigh" in name else None)
    received, errors = transmit_bits(payload, channel, seed=3)
    expected = ber(10 ** (snr / 10))
    measured = errors / (8 * len(payload))
    assert measured == pytest.approx(expected, rel=0.1)
    flips = np.unpackbits(np.frombuffer(payload, np.uint8) ^ np.frombuffer(received, np.uint8)).sum()
    assert flips == errors


def test_clean_digital_link_is_exact():
    payload = os.urandom(2000)
    assert transmit_bits(payload, Channel("digital-16qam", 40.0), seed=0) == (payload, 0)


def test_channel_uses():
    assert channel_uses(Channel("digital-16qam", 10), 1000) == 250
    # analog: values two per use; 30 side bits at 16-QAM 2/3 (8/3 bits per use, 10 dB): 11.25 -> 12 uses
    assert channel_uses(Channel("awgn", 10), 8000, analog_values=101, side_bits=30) == 51 + 12
    assert channel_uses(Channel("awgn", 0), 8000, analog_values=101, side_bits=30) == 51 + 45  # QPSK 1/3


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 4.5, 9.4, 9.5, 12.0, 20.0])
def test_side_information_goes_at_the_mcs_rate_rounded_up(snr_db):
    """Against exact rational arithmetic: bits / (bits per symbol x code rate), rounded up, also on arrays."""
    mcs = choose_mcs(snr_db)
    assert mcs == (max((m for m in MCS_TABLE if m.threshold_db <= snr_db), key=lambda m: m.efficiency)
                   if snr_db >= MCS_TABLE[0].threshold_db else MCS_TABLE[0])
    bits = np.arange(0, 5000, 7)
    exact = [math.ceil(Fraction(int(b)) / (mcs.bits_per_symbol * Fraction(mcs.rate).limit_denominator(64)))
             for b in bits]
    assert list(side_channel_uses(bits, snr_db)) == exact
    assert [side_channel_uses(int(b), snr_db) for b in bits] == exact


def test_unknown_channel_is_a_user_error():
    with pytest.raises(UserError, match="unknown channel"):
        Channel("wifi", 10)


@pytest.mark.parametrize("snr", [float("inf"), float("-inf"), float("nan")])
def test_a_channel_at_an_snr_that_is_not_finite_is_a_user_error(snr):
    with pytest.raises(UserError, match="give a finite one"):
        Channel("awgn", snr)


def test_analog_real_is_differentiable():
    x = torch.randn(2, 20, requires_grad=True)
    analog_real(x, Channel("rayleigh", 5.0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_per_row_snr_gives_each_row_its_own_noise():
    """A training batch draws an SNR per image: each row's noise variance per real value is 10^(-SNR/10), the
    channel's own SNR unused."""
    g = torch.Generator().manual_seed(3)
    snr = torch.tensor([0.0, 10.0, 20.0, -5.0])
    x = torch.randn(4, 200_000, generator=g)
    x = x / x.pow(2).mean(1, keepdim=True).sqrt()  # unit mean square per row
    noise = analog_real(x, Channel("awgn", 99.0), g, snr_db=snr) - x
    for row, db in zip(noise, snr.tolist()):
        assert row.pow(2).mean().item() == pytest.approx(10 ** (-db / 10), rel=0.02)
    # Rayleigh without equalisation: one complex gain per row (a block per transmission), then that row's noise
    s = to_symbols(x)
    y = analog(s, Channel("rayleigh-noeq", 99.0), g, snr_db=snr)
    h = (y * s.conj()).sum(1) / s.abs().pow(2).sum(1)  # least squares: the row's gain
    residual = (y - h[:, None] * s).abs().pow(2).mean(1)
    for got, db in zip(residual.tolist(), snr.tolist()):
        assert got == pytest.approx(10 ** (-db / 10), rel=0.02)


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_awgn_on_arrays_measured_snr_matches_requested(snr):
    """The deployment's path: NumPy arrays and a NumPy Generator, the same channel model."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 100_001), np.float32)  # odd: the last real is paired with a zero
    x /= np.sqrt((x**2).mean(1, keepdims=True))
    s = to_symbols(x)
    assert s.dtype == np.complex64 and s.shape == (4, 50_001)
    y = analog(s, Channel("awgn", snr), rng)
    measured = 10 * math.log10(np.mean(np.abs(s) ** 2) / np.mean(np.abs(y - s) ** 2))
    assert measured == pytest.approx(snr, abs=0.05)
    assert np.allclose(from_symbols(to_symbols(x), x.shape[1]), x, rtol=1e-6, atol=1e-7)
    received = analog_real(x, Channel("awgn", snr), np.random.default_rng(3))
    assert np.array_equal(received, analog_real(x, Channel("awgn", snr), np.random.default_rng(3)))  # seeded
    assert np.mean((received - x) ** 2) == pytest.approx(10 ** (-snr / 10), rel=0.02)  # per real value


def test_rayleigh_on_arrays_fades_per_block_and_equalises():
    rng = np.random.default_rng(1)
    s = to_symbols(np.ones((1, 400_000), np.float32))
    y = analog(s, Channel("rayleigh", 10.0, block_len=1), rng)
    assert float(np.median(np.abs(y - s) ** 2)) == pytest.approx(0.1, rel=0.03)  # as the torch test: median 0.1
    faded = analog(s, Channel("rayleigh-noeq", 200.0, block_len=100), rng)[0] / s[0]  # noise-free: the gains
    blocks = faded.reshape(-1, 100)
    assert np.allclose(blocks, blocks[:, :1], rtol=1e-5)  # one gain per coherence block
    assert np.mean(np.abs(blocks[:, 0]) ** 2) == pytest.approx(1.0, rel=0.05)  # unit mean power
