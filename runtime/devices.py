"""Named device profiles: peak rates and power figures from the vendors' datasheets.

Used where a figure cannot be measured: the declared power model of ``EnergyMeter`` (power x measured
time, always labelled an estimate) and the cost model of lamsc.compress for devices not at hand.

Sources:
- Jetson Orin Nano / Orin NX: NVIDIA "Jetson Orin Nano Series" and "Jetson Orin NX Series" module data
  sheets (GPU cores and clocks, memory bandwidth, power modes), JetPack 6 power-mode tables; the Orin Nano's
  Super mode: NVIDIA's Jetson Orin Nano Super Developer Kit announcement (JetPack 6.1, December 2024).
- Jetson AGX Orin: NVIDIA "Jetson AGX Orin Series" module data sheet.
- Jetson Xavier NX: NVIDIA "Jetson Xavier NX" module data sheet.
- Server CPU core: AMD EPYC 7763 (64 cores, 280 W TDP) and Intel Xeon Platinum 8380 (40 cores, 270 W):
  4.4-6.8 W per busy core; 5 W is the figure declared for "cpu".
FP32 peak = CUDA cores x 2 FLOP x GPU clock; dense INT8 = half the datasheet's sparse TOPS.
"""

from __future__ import annotations

from dataclasses import dataclass

from lamsc.errors import UserError


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    fp32_tflops: float          # GPU (or CPU) peak, dense
    fp16_tflops: float
    int8_tops: float            # dense
    memory_gbps: float          # DRAM bandwidth, GB/s
    active_w: float             # module power in its default mode while running a network
    idle_w: float
    source: str

    def peak_tflops(self, precision: str) -> float:
        return {"fp32": self.fp32_tflops, "fp16": self.fp16_tflops, "int8": self.int8_tops}[precision]


DEVICES = {
    "orin-nano": DeviceProfile("Jetson Orin Nano 8GB (15 W mode)", 1.28, 2.56, 20.0, 68.0, 15.0, 4.0,
                               "Jetson Orin Nano Series data sheet: 1024 CUDA cores at 625 MHz, 40 sparse INT8 TOPS, "
                               "68 GB/s"),
    "orin-nano-super": DeviceProfile("Jetson Orin Nano 8GB Super (25 W mode, MAXN_SUPER)", 2.09, 4.18, 33.5, 102.0,
                                     25.0, 5.0, "Jetson Orin Nano Super Developer Kit (JetPack 6.1): 1024 CUDA cores "
                                     "at 1020 MHz, 67 sparse INT8 TOPS, 102 GB/s"),
    "orin-nx": DeviceProfile("Jetson Orin NX 16GB (25 W mode)", 1.88, 3.76, 50.0, 102.4, 25.0, 5.0,
                             "Jetson Orin NX Series data sheet: 1024 CUDA cores at 918 MHz, 100 sparse INT8 TOPS, "
                             "102.4 GB/s"),
    "agx-orin": DeviceProfile("Jetson AGX Orin 64GB (MAXN)", 5.32, 10.6, 137.5, 204.8, 60.0, 8.0,
                              "Jetson AGX Orin Series data sheet: 2048 CUDA cores at 1.3 GHz, 275 sparse INT8 TOPS, "
                              "204.8 GB/s"),
    "xavier-nx": DeviceProfile("Jetson Xavier NX (20 W mode)", 0.84, 1.69, 21.0, 59.7, 20.0, 4.0,
                               "Jetson Xavier NX data sheet: 384 CUDA cores at 1.1 GHz, 21 INT8 TOPS, 59.7 GB/s"),
    "cpu": DeviceProfile("server CPU", 0.1, 0.1, 0.2, 20.0, 5.0, 0.0,
                         "AMD EPYC 7763: 280 W / 64 cores; Intel Xeon 8380: 270 W / 40 cores"),
}


def device_profile(name: str) -> DeviceProfile:
    try:
        return DEVICES[name]
    except KeyError:
        raise UserError(f"unknown device profile {name!r}; choose one of {', '.join(DEVICES)}") from None
