"""The baselines lamsc is compared with, by name, each at lamsc's own channel uses and SNR.

- ``separation``: the best of JPEG, WebP, JPEG 2000 and AVIF over 5G LDPC + QAM at the MCS for the SNR
  (lamsc.semcom.separation.practical_separation); ``jpeg``, ``webp``, ``jpeg2000``, ``avif``: one codec alone.
- ``ideal``: the same codecs at Shannon capacity (lamsc.semcom.separation.ideal_separation).
- ``softcast``: SoftCast, linear analog DCT with LLSE decoding (lamsc.semcom.softcast.softcast).

Separation links are digital (they report coded bits and the MCS), SoftCast is analog (channel uses and
metadata bits); all report channel uses and CBR, the quantity every link is compared on.
"""

from __future__ import annotations

import numpy as np

from lamsc.errors import UserError
from lamsc.semcom.channels import Channel, analog_form
from lamsc.semcom.image_codecs import CODECS, CodecSearch, supported
from lamsc.semcom.separation import ideal_separation, practical_separation
from lamsc.semcom.softcast import softcast
from lamsc.semcom.transmission import LinkResult

BASELINES = {
    "separation": "the best of JPEG, WebP, JPEG 2000 and AVIF over 5G LDPC + QAM at the MCS for the SNR",
    "ideal": "the same codecs at Shannon capacity, uses x log2(1 + SNR) bits, delivered intact",
    "softcast": "SoftCast: DCT chunks scaled by variance^-1/4, sent as analog values, LLSE decoding",
    **{c: f"{c.upper() if c != 'jpeg2000' else 'JPEG 2000'} alone over 5G LDPC + QAM" for c in CODECS},
}


def baseline_channel(channel: Channel) -> Channel:
    """The analog channel a baseline runs on for ``channel``: ``lamsc.semcom.channels.analog_form`` (a
    baseline brings its own modulation)."""
    return analog_form(channel)


def run_baseline(name: str, image: np.ndarray, channel_uses: int, channel: Channel,
                 design_snr_db: float | None = None, seed: int | None = None,
                 search: CodecSearch | None = None) -> LinkResult:
    """Baseline ``name`` (one of BASELINES) for (H, W, 3) uint8 ``image`` in ``channel_uses`` complex uses over
    ``baseline_channel(channel)``. ``design_snr_db``: the SNR a separation link's MCS is chosen for (default
    the channel's); ``search``: a CodecSearch of this image, to reuse encodes. Raises UserError for an
    unknown name, or a codec this Pillow cannot encode."""
    if name not in BASELINES:
        raise UserError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    if name in CODECS and not supported(name):
        raise UserError(f"this Pillow cannot encode {name}: install Pillow 11.3 or later from its wheels "
                        "(pip install -U pillow), or choose another baseline")
    ch = baseline_channel(channel)
    if name == "softcast":
        return softcast(image, channel_uses, ch, seed)
    if name == "ideal":
        return ideal_separation(image, channel_uses, ch, CODECS, search)
    codecs = CODECS if name == "separation" else (name,)
    return practical_separation(image, channel_uses, ch, codecs, design_snr_db, seed, search)
