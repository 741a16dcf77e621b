"""Energy of a piece of work, from whichever counter this machine has; every figure names its source.

Meters, tried in this order by ``auto`` (NVML for work on the GPU, RAPL for work on the CPU):

- ``jetson``: the board's input rail: through Zeus's Jetson monitor, else lamsc's readers of the INA3221 rails
  (hwmon, jetson-stats' service, tegrastats), for what Zeus misses (lamsc.runtime.energy.jetson);
- ``nvml``: through Zeus, the energy counter of the GPU that runs the work, found by UUID (mJ, Volta and
  newer; updated every 20-100 ms, so the profiler repeats work until a window is long enough);
- ``rapl``: through Zeus, the RAPL counters of the CPU packages, chosen by zone name;
- ``model``: a declared power x measured time; not a measurement, labelled ``estimate`` wherever it appears.
"""

from __future__ import annotations

from lamsc.errors import UserError
from lamsc.runtime.energy.jetson import (HwmonRailsMeter, JtopMeter, TegrastatsMeter, board_rails, is_board_input,
                                         jetson_meter, parse_tegrastats)
from lamsc.runtime.energy.meter import EnergyMeter, Reading, Window, held_energy
from lamsc.runtime.energy.model import ModelMeter
from lamsc.runtime.energy.zeus_meters import ZeusJetsonMeter, ZeusNvmlMeter, ZeusRaplMeter

__all__ = ["METERS", "EnergyMeter", "HwmonRailsMeter", "JtopMeter", "ModelMeter", "Reading", "TegrastatsMeter",
           "Window", "ZeusJetsonMeter", "ZeusNvmlMeter", "ZeusRaplMeter", "board_rails", "energy_meter",
           "held_energy", "is_board_input", "jetson_meter", "parse_tegrastats"]

METERS = ("auto", "jetson", "nvml", "rapl", "model")


def energy_meter(kind: str = "auto", device: str = "cpu", cores: int = 1, cuda_index: int = 0,
                 work_on: str = "cpu") -> EnergyMeter:
    """The meter asked for; ``auto`` takes the first real counter that sees the work, else the model.

    ``work_on``: "cpu" or "gpu", where the measured work runs: ``auto`` reads a Jetson's board rail for either,
    else RAPL for CPU work and NVML for GPU work (an idle GPU's counter says nothing of CPU inference).
    ``device``/``cores``: the declared profile the model uses (lamsc.runtime.devices); ``cuda_index``: the CUDA
    device whose GPU NVML meters. Raises UserError for an unknown kind or a counter this machine lacks.
    """
    if kind not in METERS:
        raise UserError(f"unknown energy meter {kind!r}; choose one of {', '.join(METERS)}")
    if work_on not in ("cpu", "gpu"):
        raise ValueError(f"work_on is cpu or gpu, not {work_on!r}")
    makers = {"jetson": jetson_meter, "nvml": lambda: ZeusNvmlMeter(cuda_index), "rapl": ZeusRaplMeter}
    if kind == "model":
        return ModelMeter(device, cores)
    if kind != "auto":
        return makers[kind]()
    for name in ("jetson", "nvml" if work_on == "gpu" else "rapl"):
        try:
            return makers[name]()
        except UserError:
            continue
    return ModelMeter(device, cores)
