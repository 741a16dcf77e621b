"""Radio energy of a transmission: airtime at the link's rate x the radio's power draw while sending.

Airtime: an analog transmission takes one resource element (complex channel use) per two feature values,
sent at the radio's resource-element rate; a digital one sends its bits at the highest modulation and
coding scheme whose measured threshold (lamsc.semcom.mcs.MCS_TABLE: 5G LDPC, BLER <= 1%) the SNR
reaches, capped at the radio's own peak spectral efficiency. LoRa has no resource grid: its bits go at
the spreading factor's fixed bit rate, and an analog payload is sent as its bits.

Energy of one image's link (``link_energy_j``), the same rule for lamsc and every baseline (``RULE``): a
digital radio carries bits, so a link is charged its message (lamsc's payload, a codec's file) as the coded
bits of a transport block at the radio's MCS for the SNR (lamsc.semcom.mcs: CRC, whole LDPC codewords),
whatever the link did on the simulated channel; an analog preset (``sdr``) carries complex symbols, so a
link is charged its channel uses.

Power while transmitting (electrical draw of the radio, not radiated power):
- wifi: ESP32 data sheet, 802.11n MCS7 at +14 dBm: 180 mA at 3.3 V; 20 MHz, 52 data subcarriers per
  4 us OFDM symbol (13 M resource elements/s); peak MCS7 64-QAM 5/6.
- lte: Huang et al., "A Close Examination of Performance and Power Characteristics of 4G LTE Networks",
  MobiSys 2012: uplink P = 438.39 mW/Mbps x throughput + 1288.04 mW; 10 MHz uplink, 50 resource blocks
  x 12 subcarriers x 12 data symbols per ms (7.2 M resource elements/s); peak 64-QAM.
- nbiot: u-blox SARA-N2 / Quectel BC95 class modules at +23 dBm: about 220 mA at 3.6 V; 12 x 15 kHz
  subcarriers (multi-tone, 144 k resource elements/s), QPSK at most (3GPP Rel-13 Cat-NB1).
- lora: Semtech SX1276 data sheet, +20 dBm on PA_BOOST: 120 mA at 3.3 V; SF7, 125 kHz, CR 4/5: 5.47 kbit/s.
- sdr: the wifi preset's 20 MHz OFDM grid and draw with an open physical layer that sends any complex symbol
  (as a software-defined radio does): the radio analog links need.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamsc.errors import UserError
import math

from lamsc.semcom.mcs import MCS_TABLE, TransportBlock, choose_mcs


@dataclass(frozen=True)
class Radio:
    name: str
    resource_elements_per_s: float | None  # complex channel uses per second; None: a fixed-rate radio (LoRa)
    max_bits_per_use: float                # the radio's peak spectral efficiency (modulation x code rate)
    tx_w: float                            # draw while sending (LTE: plus tx_w_per_mbps x throughput)
    tx_w_per_mbps: float = 0.0
    fixed_bps: float | None = None
    source: str = ""
    analog: bool = False                   # True: sends any complex symbol on its grid; False: bits only

    def bits_per_use(self, snr_db: float) -> float:
        """Spectral efficiency of the best MCS that works at this SNR (0 below the most robust one)."""
        usable = [m.bits_per_symbol * m.rate for m in MCS_TABLE if m.threshold_db <= snr_db]
        return min(max(usable, default=0.0), self.max_bits_per_use)

    def airtime_s(self, snr_db: float, bits: int = 0, channel_uses: int | None = None) -> float:
        """Seconds on air: ``channel_uses`` analog symbols, or else ``bits`` sent digitally."""
        if self.fixed_bps is not None:
            return bits / self.fixed_bps
        if channel_uses is not None:
            return channel_uses / self.resource_elements_per_s
        efficiency = self.bits_per_use(snr_db)
        if efficiency == 0:
            return float("inf")
        return bits / (efficiency * self.resource_elements_per_s)

    def energy_j(self, snr_db: float, bits: int = 0, channel_uses: int | None = None) -> float:
        t = self.airtime_s(snr_db, bits, channel_uses)
        mbps = bits / t / 1e6 if t > 0 and math.isfinite(t) else 0.0
        return (self.tx_w + self.tx_w_per_mbps * mbps) * t

    def link_airtime_s(self, snr_db: float, message_bits: int, channel_uses: int) -> float:
        """Seconds on air of one image's link under RULE: ``channel_uses`` on an analog preset; on a digital one
        the ``message_bits`` as a transport block at this radio's MCS for ``snr_db`` (LoRa: at its fixed
        rate); infinite below the most robust MCS."""
        if self.analog:
            return channel_uses / self.resource_elements_per_s
        if self.fixed_bps is not None:
            return message_bits / self.fixed_bps
        if self.bits_per_use(snr_db) == 0:
            return float("inf")
        mcs = choose_mcs(snr_db, self.max_bits_per_use)
        return TransportBlock.carrying(math.ceil(message_bits / 8), mcs).channel_uses / self.resource_elements_per_s

    def link_energy_j(self, snr_db: float, message_bits: int, channel_uses: int) -> float:
        """Joules of one image's link under RULE (see link_airtime_s)."""
        t = self.link_airtime_s(snr_db, message_bits, channel_uses)
        mbps = message_bits / t / 1e6 if t > 0 and math.isfinite(t) else 0.0
        return (self.tx_w + self.tx_w_per_mbps * mbps) * t


RADIOS = {
    "wifi": Radio("Wi-Fi 802.11n 20 MHz (ESP32)", 13e6, 6 * 5 / 6, 0.180 * 3.3, source="ESP32 data sheet"),
    "lte": Radio("LTE 10 MHz uplink", 7.2e6, 6 * 5 / 6, 1.28804, 0.43839, source="Huang et al., MobiSys 2012"),
    "nbiot": Radio("NB-IoT multi-tone uplink", 144e3, 2 * 2 / 3, 0.220 * 3.6, source="SARA-N2 / BC95 class"),
    "lora": Radio("LoRa SF7 125 kHz (SX1276)", None, 0.0, 0.120 * 3.3, fixed_bps=5469.0, source="SX1276 data sheet"),
    "sdr": Radio("analog OFDM 20 MHz (open PHY, Wi-Fi's grid and draw)", 13e6, 6 * 5 / 6, 0.180 * 3.3,
                 source="ESP32 data sheet (draw), 802.11n grid", analog=True),
}
RULE = ("radio energy, the same rule for every link: a digital radio (wifi, lte, nbiot, lora) is charged the "
        "link's message bits (lamsc's payload, in its digital mode where it has an entropy model; a codec's file) "
        "as coded bits at the radio's MCS for the SNR; "
        "an analog radio (sdr) is charged the link's channel uses")


def radio(name: str) -> Radio:
    try:
        return RADIOS[name]
    except KeyError:
        raise UserError(f"unknown radio preset {name!r}; choose one of {', '.join(RADIOS)}") from None
