"""Meters that measure through Zeus (ml.energy's ``ZeusMonitor`` window API): NVML, RAPL and Jetson rails.

lamsc chooses what Zeus measures (lamsc.runtime.energy.devices: the NVML device of the CUDA device that runs
the work, the RAPL zones that are packages) and names it in ``source``; Zeus reads and differences the
counters (NVML's mJ counter, RAPL's µJ counters with their wraparound, the Jetson rails polled every 0.1 s).
"""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path

from lamsc.errors import UserError
from lamsc.runtime.energy.devices import nvml_index, rapl_package_zones
from lamsc.runtime.energy.meter import EnergyMeter

_windows = itertools.count()


def _zeus(module: str):
    """A module of Zeus's, or one UserError naming the install where Zeus is missing."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError("Zeus is not installed: pip install zeus (lamsc's energy meters measure through it)") from None


def _monitor(**indices):
    return _zeus("zeus.monitor").ZeusMonitor(**indices)


class _ZeusMeter(EnergyMeter):
    """A ZeusMonitor window per measurement. No synchronisation by Zeus: lamsc's backends return host
    outputs, so the work is done when the block ends (and the edge runtime has no torch to sync with)."""

    def start(self):
        key = f"lamsc-{next(_windows)}"
        self.monitor.begin_window(key, sync_execution=False)
        return key

    def stop(self, key, t0: float, t1: float) -> float:
        return self.joules(self.monitor.end_window(key, sync_execution=False))

    def joules(self, measurement) -> float:
        raise NotImplementedError


class ZeusNvmlMeter(_ZeusMeter):
    """The NVML energy counter (Volta and newer) of the GPU that CUDA device ``cuda_index`` is."""

    def __init__(self, cuda_index: int = 0):
        try:
            import pynvml
        except ImportError:
            raise UserError("NVML needs nvidia-ml-py: pip install 'lamsc[gpu]'") from None
        try:
            pynvml.nvmlInit()
            index = nvml_index(cuda_index, pynvml)
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            name = pynvml.nvmlDeviceGetName(handle)
        except pynvml.NVMLError as e:
            raise UserError(f"NVML's energy counter is not available here ({e}); it needs an NVIDIA GPU of "
                            "Volta or newer (Jetsons: use --energy jetson)") from None
        get_gpus = _zeus("zeus.device").get_gpus
        try:
            seen = [g.gpu_index for g in get_gpus().gpus]
        except ValueError as e:  # Zeus parses CUDA_VISIBLE_DEVICES as integers only
            raise UserError(f"Zeus cannot read CUDA_VISIBLE_DEVICES ({e}): give it NVML indices "
                            "(nvidia-smi -L) with CUDA_DEVICE_ORDER=PCI_BUS_ID") from None
        if index not in seen:  # Zeus took CUDA_VISIBLE_DEVICES as NVML indices; CUDA ordered them otherwise
            raise UserError(f"CUDA device {cuda_index} is NVML GPU {index}, which Zeus does not see (it reads "
                            "CUDA_VISIBLE_DEVICES as NVML indices): set CUDA_DEVICE_ORDER=PCI_BUS_ID")
        self.zeus_index = seen.index(index)
        self.monitor = _monitor(gpu_indices=[self.zeus_index], cpu_indices=[])
        name = name.decode() if isinstance(name, bytes) else name
        self.source = f"zeus nvml: {name} (CUDA {cuda_index} = NVML {index})"

    def joules(self, measurement) -> float:
        return measurement.gpu_energy[self.zeus_index]


class ZeusRaplMeter(_ZeusMeter):
    """The CPU packages' RAPL counters (``package-N`` zones; never ``psys``, which contains them)."""

    min_window_s = 0.05  # the counters update about every millisecond

    def __init__(self):
        rapl = _zeus("zeus.device.cpu.rapl")
        rapl_dir = next((Path(d) for d in (rapl.RAPL_DIR, rapl.CONTAINER_RAPL_DIR) if Path(d).is_dir()), None)
        zones = rapl_package_zones(rapl_dir) if rapl_dir else []
        if not zones:
            raise UserError(f"no RAPL package zones under {rapl.RAPL_DIR} (no RAPL on this CPU, or a container "
                            "without /sys/class/powercap)")
        try:
            self.monitor = _monitor(gpu_indices=[], cpu_indices=[p for p, _ in zones])
        except RuntimeError as e:  # Zeus: "Root privilege is required to read RAPL metrics…"
            raise UserError(f"the RAPL counters are not readable: {str(e).split('. ')[0]} (or: sudo chmod o+r "
                            "/sys/class/powercap/intel-rapl:*/energy_uj)") from None
        self.positions = [p for p, _ in zones]
        self.source = f"zeus rapl: {' + '.join(n for _, n in zones)}"

    def joules(self, measurement) -> float:
        return sum(measurement.cpu_energy[p] for p in self.positions)


class ZeusJetsonMeter(_ZeusMeter):
    """The board's input rail through Zeus's Jetson monitor (INA3221 under /sys/bus/i2c, polled every 0.1 s).
    Zeus takes as the input a rail named ``*_IN`` or ``system``/``total``; Thor's ``VIN`` is none of them, so
    there lamsc's own rail readers take over."""

    min_window_s = 1.0  # Zeus polls every 0.1 s and integrates power x dt: ten polls a window

    def __init__(self):
        if not _zeus("zeus.device.soc.jetson").jetson_is_available():
            raise UserError("Zeus finds no Jetson here (no /etc/nv_tegra_release on an aarch64 Linux)")
        self.monitor = _monitor(gpu_indices=[], cpu_indices=[])
        probe = self.monitor.soc.get_total_energy_consumption() if self.monitor.soc_is_present else None
        if probe is None or probe.total_energy_mj is None:
            raise UserError("Zeus finds no board input rail (VDD_IN, POM_5V_IN, *_IN) among the INA3221 rails")
        self.source = "zeus jetson: board input rail"

    def joules(self, measurement) -> float:
        return measurement.soc_energy.total_energy_mj * 1e-3
