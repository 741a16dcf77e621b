"""Energy of a piece of work, from whichever counter this machine has; every figure names its source.

Backends, tried in this order by ``auto``:

- ``jetson``: the INA3221 power rails through hwmon (what jetson-stats reads), sampled in a thread and
  integrated (power x dt) over the window; where hwmon shows no rails (some containers), the same rails
  from jetson-stats' service, else from ``tegrastats`` output. The total is the board's input rail
  (VDD_IN, POM_5V_IN on a Nano) where it has one. jetson-stats' own ``avg`` is a running 50/50 blend,
  not a mean, so it is not used. NVML is NotSupported on Orin.
- ``nvml``: the GPU's total-energy counter (mJ, Volta and newer). It updates every 20-100 ms, so short
  windows read 0 or one update: the profiler repeats work until the window is long enough.
- ``rapl``: Intel/AMD RAPL package counters (/sys/class/powercap), with wraparound at max_energy_range_uj.
- ``model``: a declared power (lamsc.runtime.devices) x measured time. Not a measurement: labelled
  ``estimate`` everywhere it appears.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

from lamsc.errors import UserError
from lamsc.runtime.devices import device_profile

METERS = ("auto", "jetson", "nvml", "rapl", "model")
POWERCAP = Path("/sys/class/powercap")
HWMON = Path("/sys/class/hwmon")


@dataclass
class Reading:
    joules: float
    seconds: float
    source: str        # "nvml (NVIDIA H100 ...)", "model: 5 W x time (estimate)", ...
    estimate: bool     # True only for the declared power model

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class Window:
    """What ``with meter.measure() as w`` yields; ``w.reading`` is set when the block ends."""

    reading: Reading | None = None


class EnergyMeter:
    """Base: subclasses give ``start() -> state`` and ``stop(state) -> joules``."""

    source = ""
    estimate = False
    min_window_s = 0.25  # NVML updates every 20-100 ms: measure windows several updates long

    def measure(self):
        return _Measurement(self)

    def start(self):
        raise NotImplementedError

    def stop(self, state) -> float:
        raise NotImplementedError


class _Measurement:
    def __init__(self, meter: EnergyMeter):
        self.meter, self.window = meter, Window()

    def __enter__(self) -> Window:
        self.t0 = time.perf_counter()
        self.state = self.meter.start()
        return self.window

    def __exit__(self, *exc) -> None:
        joules = self.meter.stop(self.state)
        self.window.reading = Reading(joules, time.perf_counter() - self.t0, self.meter.source, self.meter.estimate)


class RaplMeter(EnergyMeter):
    def __init__(self, root: Path = POWERCAP):
        self.zones = [z for z in sorted(root.glob("intel-rapl:*")) if z.name.count(":") == 1]  # packages only
        if not self.zones or not all(_readable(z / "energy_uj") for z in self.zones):
            raise UserError(f"no readable RAPL package counters under {root} (absent, or needs root: "
                            "sudo chmod o+r /sys/class/powercap/intel-rapl:*/energy_uj)")
        self.ranges = [int((z / "max_energy_range_uj").read_text()) for z in self.zones]
        self.source = f"rapl ({len(self.zones)} package{'s' * (len(self.zones) > 1)})"

    def start(self):
        return [int((z / "energy_uj").read_text()) for z in self.zones]

    def stop(self, state) -> float:
        total = 0
        for z, before, span in zip(self.zones, state, self.ranges):
            after = int((z / "energy_uj").read_text())
            total += after - before if after >= before else after + span - before  # the counter wrapped
        return total * 1e-6


class NvmlMeter(EnergyMeter):
    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ImportError:
            raise UserError("NVML needs nvidia-ml-py: pip install 'lamsc[gpu]'") from None
        try:
            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except pynvml.NVMLError as e:
            raise UserError(f"NVML's energy counter is not available here ({e}); it needs an NVIDIA GPU of "
                            "Volta or newer (Jetsons: use --energy jetson)") from None
        self.nvml = pynvml
        name = pynvml.nvmlDeviceGetName(self.handle)
        self.source = f"nvml ({name.decode() if isinstance(name, bytes) else name})"

    def start(self):
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def stop(self, state) -> float:
        return (self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) - state) * 1e-3


def ina3221_rails(root: Path = HWMON) -> dict[str, tuple[Path, Path]]:
    """Rail name -> (voltage file in mV, current file in mA) of the INA3221 monitors under hwmon."""
    rails = {}
    for hw in sorted(root.glob("hwmon*")):
        if not (hw / "name").is_file() or (hw / "name").read_text().strip() != "ina3221":
            continue
        for label in sorted(hw.glob("in*_label")):
            n = re.match(r"in(\d+)_label", label.name).group(1)
            name = label.read_text().strip()
            if name == "NC" or "sum of shunt" in name.lower():  # Orin's unconnected channels; in7's sum
                continue
            volts, amps = hw / f"in{n}_input", hw / f"curr{n}_input"
            if volts.is_file() and amps.is_file():
                rails[name] = (volts, amps)
    return rails


def board_rails(names) -> list[str]:
    """The rails whose sum is the board's power: its input rail alone where it has one (it already
    includes the others), else all of them."""
    inputs = [n for n in names if n == "VDD_IN" or n.endswith("_IN")]
    return inputs[:1] or list(names)


class JetsonMeter(EnergyMeter):
    """Integrates the board's power from its INA3221 rails under hwmon, sampled every ``period_s``."""

    def __init__(self, root: Path = HWMON, period_s: float = 0.005):
        rails = ina3221_rails(root)
        if not rails:
            raise UserError(f"no INA3221 power rails under {root}: this is not a Jetson (or hwmon is hidden)")
        self.rails = {n: rails[n] for n in board_rails(rails)}
        self.period_s = period_s
        self.source = f"jetson rails ({'+'.join(self.rails)})"

    def power_w(self) -> float:
        return sum(int(v.read_text()) * int(a.read_text()) for v, a in self.rails.values()) * 1e-6

    def start(self):
        state = {"joules": 0.0, "stop": threading.Event()}

        def sample():
            last_t, last_p = time.perf_counter(), self.power_w()
            while not state["stop"].wait(self.period_s):
                t, p = time.perf_counter(), self.power_w()
                state["joules"] += 0.5 * (p + last_p) * (t - last_t)  # trapezoid
                last_t, last_p = t, p
            t, p = time.perf_counter(), self.power_w()
            state["joules"] += 0.5 * (p + last_p) * (t - last_t)

        state["thread"] = threading.Thread(target=sample, daemon=True)
        state["thread"].start()
        return state

    def stop(self, state) -> float:
        state["stop"].set()
        state["thread"].join()
        return state["joules"]


def parse_tegrastats(line: str) -> dict[str, float]:
    """Rail powers in W from one tegrastats line: "VDD_IN 5012mW/4980mW" (JetPack 5 and 6) or
    "POM_5V_IN 2353/2353" (JetPack 4); "RAM 2300/7620MB" and the like are not rails."""
    return {name: int(now) / 1000 for name, now in re.findall(r"(\w+) (\d+)(?:mW)?/\d+(?:mW)?(?=\s|$)", line)}


class TegrastatsMeter(EnergyMeter):
    """The board's power from a ``tegrastats`` process's lines, every ``interval_ms``, integrated over the
    window; each reading is held until the next one, the first back to the window's start."""

    def __init__(self, interval_ms: int = 50, command: str = "tegrastats"):
        self.command = shutil.which(command)
        if self.command is None:
            raise UserError(f"{command} is not on PATH (JetPack puts it in /usr/bin)")
        self.interval_ms = interval_ms
        self.source = "jetson rails via tegrastats"

    def start(self):
        t0 = time.perf_counter()
        proc = subprocess.Popen([self.command, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        state = {"proc": proc, "samples": [], "first": threading.Event()}

        def read():
            for line in proc.stdout:
                rails = parse_tegrastats(line)
                if rails:
                    state["samples"].append((time.perf_counter(), sum(rails[n] for n in board_rails(rails))))
                    state["first"].set()
            state["first"].set()  # the process ended: stop() reports what it has

        state["thread"] = threading.Thread(target=read, daemon=True)
        state["thread"].start()
        state["first"].wait(timeout=10 * self.interval_ms / 1000 + 5)
        state["t0"] = t0
        return state

    def stop(self, state) -> float:
        t1 = time.perf_counter()
        state["proc"].terminate()
        state["proc"].wait()
        state["thread"].join()
        if not state["samples"]:
            raise UserError(f"{self.command} printed no power rails: run it by hand to see what it prints")
        return held_energy(state["samples"], state["t0"], t1)


def held_energy(samples: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Joules over [t0, t1] from (time, watts) readings of a sampling service: each reading holds until the
    next; the one in force at t0 is the last before it, else the first of the window."""
    before = [p for t, p in samples if t <= t0]
    inside = [(t, p) for t, p in samples if t0 < t <= t1]
    if not before and not inside:
        raise ValueError("no power reading in or before the window")
    steps = [(t0, before[-1] if before else inside[0][1])] + inside + [(t1, 0.0)]
    return sum(p * (b - a) for (a, p), (b, _) in zip(steps, steps[1:]))


class JtopMeter(EnergyMeter):
    """The board's power from jetson-stats' service (``jtop``): where hwmon is hidden, as in a container that
    mounts /run/jtop.sock, it still reads the rails. The service publishes every ``interval`` seconds (its own
    if another client set one); each reading holds until the next, so windows span at least five."""

    def __init__(self, interval_s: float = 0.1):
        try:
            from jtop import JtopException, jtop
        except ImportError:
            raise UserError("jetson-stats is not installed: pip install 'lamsc[jetson]'") from None
        client = jtop(interval=interval_s)
        try:
            client.start()
        except JtopException as e:
            reason = " ".join(str(e).split())  # jtop's messages span lines
            raise UserError(f"jetson-stats' service is not reachable: {reason}") from None
        weakref.finalize(self, client.close)
        self.samples: list[tuple[float, float]] = []
        client.attach(self._update)
        self.min_window_s = max(EnergyMeter.min_window_s, 5 * float(client.interval))
        mode = client.nvpmodel
        self.source = f"jetson rails via jetson-stats{f' (power mode {mode.name})' if mode else ''}"

    def _update(self, jetson) -> None:
        self.samples.append((time.perf_counter(), jetson.power["tot"]["power"] / 1000))  # mW

    def start(self):
        del self.samples[:-1]  # only the reading in force now matters to this window
        return time.perf_counter()

    def stop(self, t0) -> float:
        t1 = time.perf_counter()
        if not self.samples:
            raise UserError("jetson-stats' service sent no power readings: check `jtop` by hand")
        return held_energy(self.samples, t0, t1)


def jetson_meter() -> EnergyMeter:
    """The INA3221 rails through hwmon, else through jetson-stats' service, else through tegrastats."""
    reasons = []
    for make in (JetsonMeter, JtopMeter, TegrastatsMeter):
        try:
            return make()
        except UserError as e:
            reasons.append(str(e))
    raise UserError("no Jetson power rails can be read here: " + "; ".join(reasons))


class ModelMeter(EnergyMeter):
    """Declared power x measured time: an estimate, for machines without any counter."""

    estimate = True

    def __init__(self, device: str = "cpu", cores: int = 1):
        profile = device_profile(device)
        self.watts = profile.active_w * (cores if device == "cpu" else 1)
        self.source = f"model: {self.watts:g} W declared for {profile.name}{f' x {cores} cores' if device == 'cpu' else ''} x time (estimate)"

    def start(self):
        return time.perf_counter()

    def stop(self, state) -> float:
        return self.watts * (time.perf_counter() - state)


def energy_meter(kind: str = "auto", device: str = "cpu", cores: int = 1) -> EnergyMeter:
    """The meter asked for; ``auto`` takes the first real counter this machine has, else the model."""
    if kind not in METERS:
        raise UserError(f"unknown energy meter {kind!r}; choose one of {', '.join(METERS)}")
    makers = {"jetson": jetson_meter, "nvml": NvmlMeter, "rapl": RaplMeter}
    if kind == "model":
        return ModelMeter(device, cores)
    if kind != "auto":
        return makers[kind]()
    for make in makers.values():
        try:
            return make()
        except UserError:
            continue
    return ModelMeter(device, cores)


def _readable(path: Path) -> bool:
    try:
        path.read_text()
        return True
    except OSError:
        return False
