"""Separate source and channel coding at a given number of channel uses: an image codec's file over a
coded digital link (the practical separation baseline), and over a capacity-achieving one (the ideal).

Practical: the MCS with the most bits per use whose measured threshold the design SNR reaches
(lamsc.semcom.mcs); the channel uses shared among as many code blocks as hold 4800 coded bits each
(lamsc.semcom.mcs.TransportBlock); the best file of the codecs that fits what they carry
(lamsc.semcom.image_codecs: downscaled when the full size does not fit, scaled back up at the receiver); then
5G LDPC + QAM over the channel. Scoring rule: the picture is scored as the receiver shows it. When every code
block passes its CRC that is the file's picture; when one fails, the receiver decodes the file up to the first
failed block (JPEG shows the rows it got; formats that cannot decode a cut file show nothing) and shows
mid-grey where it has no picture.

Ideal: the same codecs given C = uses x log2(1 + SNR) bits (Shannon; on Rayleigh fading the ergodic
capacity E[log2(1 + |h|^2 SNR)]), delivered without error: the bound no digital link crosses.
"""

from __future__ import annotations

import math
import time

import numpy as np
from scipy.special import exp1

from lamsc.semcom import metrics
from lamsc.semcom.channels import Channel
from lamsc.semcom.image_codecs import CODECS, CodecSearch, decode
from lamsc.semcom.mcs import CODEWORD, TransportBlock, choose_mcs, coded_link
from lamsc.semcom.transmission import LinkResult, Reconstruction, lost_image

SCORING_RULE = ("a failed code block is scored as what the receiver shows: the file decoded up to the first "
                "failed block, mid-grey where that gives no picture")


def capacity_bits_per_use(channel: Channel) -> float:
    """Shannon capacity, bits per complex channel use: log2(1 + SNR) on AWGN; on Rayleigh fading the ergodic
    capacity E[log2(1 + |h|^2 SNR)] = e^(1/SNR) E1(1/SNR) / ln 2 (|h|^2 exponential, unit mean)."""
    snr = 10.0 ** (channel.snr_db / 10.0)
    if channel.fading:
        return float(math.exp(1.0 / snr) * exp1(1.0 / snr) / math.log(2.0))
    return math.log2(1.0 + snr)


def _link_name(codecs: tuple[str, ...], kind: str) -> str:
    if len(codecs) == 1:
        return f"{codecs[0]}+{'ldpc' if kind == 'practical' else 'capacity'}"
    return "separation" if kind == "practical" else "ideal"


def _result(name: str, image: np.ndarray, rec: Reconstruction, file_bits: int, coded_bits: int, uses: int,
            mcs: str, detail: str, seconds: float) -> LinkResult:
    h, w = image.shape[:2]
    return LinkResult(name, rec, file_bits, uses, uses / (3 * h * w), 1.0,
                      float(metrics.psnr(image, rec.image)),
                      *map(float, metrics.ssim_and_ms_ssim(image, rec.image)), 0, {"link": seconds},
                      link="digital", coded_bits=coded_bits, mcs=mcs, detail=detail)


def practical_separation(image: np.ndarray, channel_uses: int, channel: Channel, codecs: tuple[str, ...] = CODECS,
                         design_snr_db: float | None = None, seed: int | None = None,
                         search: CodecSearch | None = None) -> LinkResult:
    """The best file of ``codecs`` for (H, W, 3) uint8 ``image`` within ``channel_uses`` complex uses, sent over
    5G LDPC + QAM on ``channel`` (awgn or rayleigh) at the MCS chosen for ``design_snr_db`` (dB; default the
    channel's SNR, the baseline's best case); noise seeded by ``seed``. ``search``: a CodecSearch of this
    image to reuse encodes across calls.

    Reports the file's bits (``bits``), the coded bits and the channel uses they take (at most
    ``channel_uses``). A row that cannot be sent is lost and says why. Source: 3GPP TS 38.212 (LDPC,
    CRC), the MCS table measured in lamsc.semcom.mcs.
    """
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    mcs = choose_mcs(channel.snr_db if design_snr_db is None else design_snr_db)
    name = _link_name(codecs, "practical")
    room = TransportBlock.filling(channel_uses, mcs)
    budget = max(0, room.message_bits // 8) if room else 0
    found = (search or CodecSearch(image)).best(budget, codecs) if budget > 0 else None
    if found is None:
        why = (f"{channel_uses} channel uses hold no {CODEWORD}-bit codeword at {mcs.name}" if budget <= 0 else
               f"no {'/'.join(codecs)} file of this image fits {budget} bytes ({room.blocks} code blocks at "
               f"{mcs.name}), even downscaled")
        return _result(name, image, lost_image(h, w, why), 0, 0, 0, mcs.name, why, time.perf_counter() - t0)
    got = coded_link(found.data, mcs, channel, seed)
    used = TransportBlock.carrying(len(found.data), mcs)
    detail = f"{found.describe((h, w))}; {got.blocks - got.failed}/{got.blocks} blocks decoded"
    if got.complete:
        rec = Reconstruction(decode(got.data, found.codec, h, w))
    else:
        shown = decode(got.data, found.codec, h, w)
        reason = (f"{got.failed} of {got.blocks} code blocks failed their CRC at {mcs.name}; shown: "
                  + ("the file up to the first failed block" if shown is not None else "mid-grey (no picture)"))
        rec = lost_image(h, w, reason) if shown is None else Reconstruction(shown, lost=True, reason=reason)
    return _result(name, image, rec, 8 * len(found.data), used.coded_bits, used.channel_uses, mcs.name, detail,
                   time.perf_counter() - t0)


def ideal_separation(image: np.ndarray, channel_uses: int, channel: Channel, codecs: tuple[str, ...] = CODECS,
                     search: CodecSearch | None = None) -> LinkResult:
    """The best file of ``codecs`` within floor(``channel_uses`` x capacity) bits, delivered intact. Reports
    the file's bits and the channel uses a capacity-achieving code needs for them (``coded_bits`` 0: no
    real code). Source: Shannon, "A Mathematical Theory of Communication", 1948."""
    t0 = time.perf_counter()
    h, w = image.shape[:2]
    per_use = capacity_bits_per_use(channel)
    budget = int(channel_uses * per_use) // 8
    name = _link_name(codecs, "ideal")
    found = (search or CodecSearch(image)).best(budget, codecs) if budget > 0 else None
    label = f"capacity {per_use:.3f} bit/use"
    if found is None:
        why = f"no {'/'.join(codecs)} file of this image fits {budget} bytes at {label}, even downscaled"
        return _result(name, image, lost_image(h, w, why), 0, 0, 0, "capacity", why, time.perf_counter() - t0)
    rec = Reconstruction(decode(found.data, found.codec, h, w))
    uses = math.ceil(8 * len(found.data) / per_use)
    return _result(name, image, rec, 8 * len(found.data), 0, uses, "capacity", f"{found.describe((h, w))}; {label}",
                   time.perf_counter() - t0)
