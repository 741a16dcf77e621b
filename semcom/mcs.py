"""The coded digital link: 5G NR LDPC + QAM (Sionna), its modulation and coding schemes (MCS) and their
measured thresholds, and a transport block sent over it.

A message (bytes) is a transport block: it gets a CRC-24A and is cut into code blocks of ``k - 24`` bits
that each get a CRC-24B and are LDPC-encoded and rate-matched to ``n`` coded bits (3GPP TS 38.212, 5.1-5.4;
here every block carries its CRC-24B, also when there is only one), mapped onto Gray-coded QAM and sent over
the channel (lamsc.semcom.channels.analog: AWGN, or Rayleigh equalised with perfect CSI). The receiver
demaps to LLRs (APP demapper), runs 20 belief-propagation iterations and checks each block's CRC.
``TransportBlock`` segments a block the way TS 38.212 5.4.2.1 shares a number of channel uses among its code
blocks: as many code blocks as hold ``CODEWORD`` = 4800 coded bits, each rate-matched to an equal share of
the uses, so that no use is left idle but under one QAM symbol per block.

``MCS_TABLE`` thresholds: the lowest SNR (Es/N0 per complex symbol, AWGN, on a 0.5 dB grid) at which a
4800-bit codeword of that scheme fails at most 2 times in 200 (block error rate <= 1%), measured with
this module's own ``ldpc_qam`` (Sionna 2.2) by ``benchmarks/mcs_bler.py``; the measured rates are in
benchmarks/results/mcs_bler.md, which also checks the longest codeword rate matching makes (just under
twice as long) at each threshold: a longer code of the same rate decodes at least as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from lamsc.semcom.channels import Channel, analog

CODEWORD = 4800   # the shortest LDPC codeword (coded bits) a code block is rate-matched to
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
        """Information bits (CRC-24B included) of a ``CODEWORD``-bit codeword."""
        return self.information_bits(CODEWORD)

    def information_bits(self, n: int) -> int:
        """Information bits (CRC-24B included) of an ``n``-bit codeword at this code rate, rounded down."""
        return int(n * Fraction(self.rate).limit_denominator(64))

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


@dataclass(frozen=True)
class TransportBlock:
    """A transport block's code block segmentation at ``mcs``: ``blocks`` code blocks, each of ``k``
    information bits (its CRC-24B included) LDPC-coded and rate-matched to ``n`` coded bits, ``n`` a whole
    number of QAM symbols from ``CODEWORD`` to just under twice that (TS 38.212 5.2.2, 5.4.2.1: equal shares
    of the transport block's coded bits, the remainder under one symbol per block left idle)."""

    mcs: MCS
    blocks: int
    n: int

    @property
    def k(self) -> int:
        return self.mcs.information_bits(self.n)

    @property
    def message_bits(self) -> int:
        """The longest message it carries: every block's bits but their CRC-24B, less the CRC-24A."""
        return self.blocks * (self.k - CRC_BITS) - CRC_BITS

    @property
    def coded_bits(self) -> int:
        return self.blocks * self.n

    @property
    def channel_uses(self) -> int:
        """Complex channel uses on the air: ``n / bits_per_symbol`` per block."""
        return self.coded_bits // self.mcs.bits_per_symbol

    @classmethod
    def filling(cls, channel_uses: int, mcs: MCS) -> TransportBlock | None:
        """The segmentation that fills ``channel_uses`` complex uses: as many blocks as hold ``CODEWORD`` coded
        bits, each given an equal share of the uses; None when the uses hold no ``CODEWORD``-bit codeword."""
        q = mcs.bits_per_symbol
        blocks = max(0, channel_uses) * q // CODEWORD
        return cls(mcs, blocks, q * (channel_uses // blocks)) if blocks else None

    @classmethod
    def carrying(cls, num_bytes: int, mcs: MCS) -> TransportBlock:
        """The segmentation of the fewest channel uses that carries a message of ``num_bytes`` bytes."""
        need = 8 * num_bytes
        uses = -(-CODEWORD // mcs.bits_per_symbol)
        while True:
            tb = cls.filling(uses, mcs)
            if tb.message_bits >= need:
                return tb
            # d more uses add at most efficiency x (d + blocks) + blocks bits (each block's k rounds down):
            # a step short of the shortfall never passes the first number of uses that carries the message
            short = need - tb.message_bits - tb.blocks * (1 + mcs.efficiency)
            uses += max(1, int(short / mcs.efficiency))


def ldpc_qam(info, mcs: MCS, channel: Channel, generator=None, n: int = CODEWORD):
    """Information bits (B, k) in {0, 1}, a torch tensor -> the decoder's hard decisions (B, k) after LDPC
    encoding rate-matched to ``n`` coded bits, ``mcs``'s QAM mapping, ``channel`` (noise from the
    torch.Generator ``generator``) and APP demapping with the channel's noise variance. Sionna's encoder and
    decoder (3GPP TS 38.212 base graphs and rate matching); Sionna runs on torch, which the simulated coded
    link (not the MCS table) needs."""
    import torch
    from sionna.phy.fec.ldpc import LDPC5GDecoder, LDPC5GEncoder

    from lamsc.semcom.distributed import intra_op_threads
    from sionna.phy.mapping import Demapper, Mapper

    encoder = LDPC5GEncoder(info.shape[-1], n)
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
    """Send ``message`` as one transport block at ``mcs`` over ``channel`` (noise seeded by ``seed``), in
    the channel uses of ``TransportBlock.carrying(len(message), mcs)``. Raises ValueError on a digital
    ``channel``: this link does its own modulation over an analog one.
    """
    import torch
    from sionna.phy.fec.crc import CRCDecoder, CRCEncoder

    if channel.digital:
        raise ValueError("the coded link modulates its own symbols: give it an analog channel (awgn, rayleigh)")
    tb_crc, cb_crc = CRCEncoder("CRC24A"), CRCEncoder("CRC24B")
    bits = torch.from_numpy(np.unpackbits(np.frombuffer(message, np.uint8)).astype(np.float32))
    tb = tb_crc(bits[None])[0]
    segments = TransportBlock.carrying(len(message), mcs)
    blocks, per_block = segments.blocks, segments.k - CRC_BITS
    padded = torch.zeros(blocks * per_block)
    padded[: len(tb)] = tb
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    decided = ldpc_qam(cb_crc(padded.view(blocks, per_block)), mcs, channel, g, segments.n)
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
