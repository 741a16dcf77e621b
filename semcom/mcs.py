"""The coded digital link: 5G NR LDPC + QAM (Sionna), its modulation and coding schemes (MCS) and their
measured thresholds, and a transport block sent over it.

A message (bytes) is a transport block: it gets a CRC-24A, is cut into code blocks of ``k - 24`` bits that
each get a CRC-24B and are LDPC-encoded into ``CODEWORD`` = 4800 coded bits (3GPP TS 38.212, 5.1-5.3; here
every block carries its CRC-24B, also when there is only one), mapped onto Gray-coded QAM and sent over
the channel (lamsc.semcom.channels.analog: AWGN, or Rayleigh equalised with perfect CSI). The receiver
demaps to LLRs (APP demapper), runs 20 belief-propagation iterations and checks each block's CRC.

``MCS_TABLE`` thresholds: the lowest SNR (Es/N0 per complex symbol, AWGN, on a 0.5 dB grid) at which a
4800-bit codeword of that scheme fails at most 2 times in 200 (block error rate <= 1%), measured with
this module's own ``ldpc_qam`` (Sionna 2.2) by ``benchmarks/mcs_bler.py``; the measured rates are in
benchmarks/results/mcs_bler.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lamsc.semcom.channels import Channel, analog

CODEWORD = 4800   # LDPC codeword length in coded bits
CRC_BITS = 24     # CRC-24A per transport block, CRC-24B per code block (TS 38.212, 5.1)
ITERATIONS = 20   # belief-propagation iterations of the decoder


@dataclass(frozen=True)
class MCS:
    """A modulation and coding scheme: ``bits_per_symbol`` (2 QPSK, 4 16-QAM, 6 64-QAM), LDPC code ``rate``,
    and ``threshold_db``, the SNR (dB) from which its block error rate on AWGN is <= 1% (measured)."""

    name: str
    bits_per_symbol: int
    rate: float
    threshold_db: float

    @property
    def k(self) -> int:
        """Information bits per codeword (CRC-24B included)."""
        return int(CODEWORD * self.rate)

    @property
    def efficiency(self) -> float:
        """Information bits per complex channel use."""
        return self.bits_per_symbol * self.rate

    @property
    def exact_efficiency(self) -> Fraction:
        """``efficiency`` as a fraction (2/3 for QPSK 1/3), for counts that must not round the wrong way."""
        return self.bits_per_symbol * Fraction(self.rate).limit_denominator(64)


MCS_TABLE = (
    MCS("qpsk-1/3", 2, 1 / 3, -0.5),
    MCS("qpsk-1/2", 2, 1 / 2, 1.5),
    MCS("qpsk-2/3", 2, 2 / 3, 3.5),
    MCS("qpsk-3/4", 2, 3 / 4, 4.5),
    MCS("16qam-1/2", 4, 1 / 2, 7.0),
    MCS("16qam-2/3", 4, 2 / 3, 9.5),
    MCS("16qam-3/4", 4, 3 / 4, 10.5),
    MCS("64qam-2/3", 6, 2 / 3, 14.5),
    MCS("64qam-3/4", 6, 3 / 4, 16.0),
    MCS("64qam-5/6", 6, 5 / 6, 17.5),
)


def choose_mcs(snr_db: float, max_efficiency: float = math.inf) -> MCS:
    """The scheme with the most information bits per channel use whose measured threshold is at or below
    ``snr_db`` (dB), optionally capped at ``max_efficiency`` bits per use (a radio's peak); the most robust
    scheme when none reaches it (the link is then sent anyway and its blocks mostly fail)."""
    usable = [m for m in MCS_TABLE if m.threshold_db <= snr_db and m.efficiency <= max_efficiency + 1e-9]
    return max(usable, key=lambda m: m.efficiency) if usable else MCS_TABLE[0]


def side_channel_uses(side_bits, snr_db: float):
    """Complex channel uses of an analog link's side information (header, depth map, padding, CRC; SoftCast's
    metadata): ``side_bits`` (an int, or an integer array) sent digitally at the information rate of the MCS
    ``choose_mcs(snr_db)`` picks, the coded link of the separation baseline and the digital mode, whose BLER is
    <= 1% there; it is then taken as received intact. Below the most robust scheme's threshold it is charged that
    scheme's rate. Rounded up: a use carries no fraction of a symbol."""
    rate = choose_mcs(snr_db).exact_efficiency
    return -(-(side_bits * rate.denominator) // rate.numerator)


def analog_channel_uses(values: int, side_bits: int, snr_db: float) -> int:
    """Complex channel uses of an analog transmission at ``snr_db`` (dB): ``values`` real values two per use, and
    ``side_bits`` of side information at the coded rate (``side_channel_uses``)."""
    return math.ceil(values / 2) + side_channel_uses(side_bits, snr_db)


def channel_uses(channel: Channel, payload_bits: int, analog_values: int = 0, side_bits: int = 0) -> int:
    """Complex channel uses of one transmission over ``channel``.

    Digital (uncoded BPSK/QPSK/16-QAM): every payload bit on the modulation. Analog: the kept feature values
    two per use, plus the side information at the coded rate for the channel's SNR (``side_channel_uses``).
    """
    if channel.digital:
        return math.ceil(payload_bits / channel.bits_per_symbol)
    return analog_channel_uses(analog_values, side_bits, channel.snr_db)


def mcs_by_name(name: str) -> MCS:
    for m in MCS_TABLE:
        if m.name == name:
            return m
    raise KeyError(name)


def blocks_within(channel_uses: int, mcs: MCS) -> int:
    """Whole codewords that ``channel_uses`` complex channel uses carry at ``mcs``."""
    return max(0, channel_uses) * mcs.bits_per_symbol // CODEWORD


def message_bytes(blocks: int, mcs: MCS) -> int:
    """The longest message (bytes) that ``blocks`` code blocks carry, after the transport block's CRC and
    each block's CRC; 0 when nothing fits."""
    return max(0, (blocks * (mcs.k - CRC_BITS) - CRC_BITS) // 8)


def blocks_needed(num_bytes: int, mcs: MCS) -> int:
    """Code blocks of a message of ``num_bytes`` bytes (with its CRCs)."""
    return -(-(8 * num_bytes + CRC_BITS) // (mcs.k - CRC_BITS))


def channel_uses_of(blocks: int, mcs: MCS) -> int:
    """Complex channel uses of ``blocks`` codewords: ``CODEWORD / bits_per_symbol`` each."""
    return blocks * CODEWORD // mcs.bits_per_symbol


def symbols_needed(num_bytes: int, mcs: MCS) -> int:
    """Complex channel uses of a message of ``num_bytes`` bytes sent as a transport block at ``mcs``."""
    return channel_uses_of(blocks_needed(num_bytes, mcs), mcs)


def ldpc_qam(info, mcs: MCS, channel: Channel, generator=None):
    """Information bits (B, k) in {0, 1}, a torch tensor -> the decoder's hard decisions (B, k) after LDPC
    encoding, QAM mapping, ``channel`` (noise from the torch.Generator ``generator``) and APP demapping with
    the channel's noise variance. Sionna's encoder and decoder (3GPP TS 38.212 base graphs, rate matching to
    ``CODEWORD``); Sionna runs on torch, which the simulated coded link (not the MCS table) needs."""
    import torch
    from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder

    from lamsc.semcom.distributed import intra_op_threads
    from sionna.phy.mapping import Demapper, Mapper

    encoder = LDPC5GEncoder(mcs.k, CODEWORD)
    decoder = LDPC5GDecoder(encoder, num_iter=ITERATIONS)
    codewords = encoder(info.float())
    symbols = Mapper("qam", mcs.bits_per_symbol)(codewords)
    received = analog(symbols.reshape(1, -1).to(torch.complex64), channel, generator).view_as(symbols)
    llr = Demapper("app", "qam", mcs.bits_per_symbol)(received, torch.tensor(channel.noise_variance))
    # The decoder runs many small gathers and scatters: intra-op threads only add synchronisation (on a busy
    # 2-core machine, 10x slower with two), so it runs on one and the caller's setting comes back after.
    with intra_op_threads(1):
        return decoder(llr).round()


@dataclass
class Delivered:
    """What a transport block's receiver holds: ``data``, the message's bytes up to the first code block
    whose CRC failed (all of it when none failed and the transport block's CRC passed); ``blocks`` sent,
    ``failed`` among them."""

    data: bytes
    blocks: int
    failed: int

    @property
    def complete(self) -> bool:
        return self.failed == 0


def coded_link(message: bytes, mcs: MCS, channel: Channel, seed: int | None = None) -> Delivered:
    """Send ``message`` as one transport block at ``mcs`` over ``channel`` (noise seeded by ``seed``).

    Uses ``symbols_needed(len(message), mcs)`` channel uses. Raises ValueError on a digital ``channel``:
    this link does its own modulation over an analog one.
    """
    import torch
    from sionna.phy.fec.crc import CRCDecoder, CRCEncoder

    if channel.digital:
        raise ValueError("the coded link modulates its own symbols: give it an analog channel (awgn, rayleigh)")
    tb_crc, cb_crc = CRCEncoder("CRC24A"), CRCEncoder("CRC24B")
    bits = torch.from_numpy(np.unpackbits(np.frombuffer(message, np.uint8)).astype(np.float32))
    tb = tb_crc(bits[None])[0]
    per_block = mcs.k - CRC_BITS
    blocks = blocks_needed(len(message), mcs)
    padded = torch.zeros(blocks * per_block)
    padded[: len(tb)] = tb
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    decided = ldpc_qam(cb_crc(padded.view(blocks, per_block)), mcs, channel, g)
    block_bits, ok = CRCDecoder(cb_crc)(decided)
    ok = ok.reshape(-1).numpy().astype(bool)
    failed = int((~ok).sum())
    got = block_bits.reshape(-1)[: len(tb)]
    if failed == 0:
        _, tb_ok = CRCDecoder(tb_crc)(got[None])
        if bool(tb_ok.reshape(-1)[0]):
            return Delivered(message_of(got[: len(bits)]), blocks, 0)
        failed = blocks  # every block passed but the whole did not: nothing can be trusted
    first_bad = int(np.argmin(ok))  # 0 when the transport block's CRC failed: all of ok is True
    return Delivered(message_of(got[: min(first_bad * per_block, len(bits)) // 8 * 8]), blocks, failed)


def message_of(bits) -> bytes:
    """Bits (a torch tensor of 0/1) -> bytes, eight bits a byte, most significant first."""
    return np.packbits(bits.numpy().astype(np.uint8)).tobytes()
