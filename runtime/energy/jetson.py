"""The board's power on a Jetson, read where Zeus does not: INA3221 rails under hwmon (Thor's ``VIN`` input,
which Zeus's rail names miss), jetson-stats' service (``jtop``: the rails from inside a container that mounts
/run/jtop.sock) and ``tegrastats`` output.

A board's input rail (VDD_IN on Orin, POM_5V_IN on a Nano, VIN on Thor, SYS5V_IN...) already contains every
other rail, so where one exists it is the figure alone; a total is never summed with its parts. jetson-stats'
own ``avg`` is a running 50/50 blend, not a mean, so it is not used. NVML is NotSupported on Orin.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
import weakref
from pathlib import Path

from lamsc.errors import UserError
from lamsc.runtime.energy.meter import EnergyMeter, held_energy
from lamsc.runtime.energy.zeus_meters import ZeusJetsonMeter

HWMON = Path("/sys/class/hwmon")


def is_board_input(rail: str) -> bool:
    """True for a board's input rail: ``VIN`` (Thor) or a name ending in ``_IN`` (VDD_IN, POM_5V_IN, SYS5V_IN).
    ``VIN_SYS_5V0`` (AGX Orin) is a 5 V system rail, one part among others."""
    return rail == "VIN" or rail.endswith("_IN")


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
    inputs = [n for n in names if is_board_input(n)]
    return inputs[:1] or list(names)


class HwmonRailsMeter(EnergyMeter):
    """Integrates the board's power from its INA3221 rails under hwmon, sampled every ``period_s`` from a
    thread; each reading holds until the next."""

    def __init__(self, root: Path = HWMON, period_s: float = 0.005):
        rails = ina3221_rails(root)
        if not rails:
            raise UserError(f"no INA3221 power rails under {root}: this is not a Jetson (or hwmon is hidden)")
        self.rails = {n: rails[n] for n in board_rails(rails)}
        self.period_s = period_s
        self.source = f"jetson rails via hwmon: {' + '.join(self.rails)}"

    def power_w(self) -> float:
        return sum(int(v.read_text()) * int(a.read_text()) for v, a in self.rails.values()) * 1e-6

    def start(self):
        state = {"samples": [(time.perf_counter(), self.power_w())], "stop": threading.Event()}

        def sample():
            while not state["stop"].wait(self.period_s):
                state["samples"].append((time.perf_counter(), self.power_w()))

        state["thread"] = threading.Thread(target=sample, daemon=True)
        state["thread"].start()
        return state

    def stop(self, state, t0: float, t1: float) -> float:
        state["stop"].set()
        state["thread"].join()
        return held_energy(state["samples"], t0, t1)


def parse_tegrastats(line: str) -> dict[str, float]:
    """Rail powers in W (the current reading) from one tegrastats line, in each format L4T prints:
    ``VDD_IN 5012mW/4980mW`` (JetPack 5 and 6: current/average), ``POM_5V_IN 2353/2353`` (JetPack 4: no unit),
    ``VDD_GPU 4925mW/4925mW/4925mW`` (L4T R39: current/average/peak). ``RAM 2300/7620MB`` and the like are
    not rails."""
    return {name: int(now) / 1000
            for name, now in re.findall(r"(\w+) (\d+)(?:mW)?(?:/\d+(?:mW)?){1,2}(?=\s|$)", line)}


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
        proc = subprocess.Popen([self.command, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        state = {"proc": proc, "samples": [], "first": threading.Event()}

        def read():
            for line in proc.stdout:
                rails = parse_tegrastats(line)
                if rails:
                    summed = board_rails(rails)
                    state["samples"].append((time.perf_counter(), sum(rails[n] for n in summed)))
                    self.source = f"jetson rails via tegrastats: {' + '.join(summed)}"
                    state["first"].set()
            state["first"].set()  # the process ended: stop() reports what it has

        state["thread"] = threading.Thread(target=read, daemon=True)
        state["thread"].start()
        state["first"].wait(timeout=10 * self.interval_ms / 1000 + 5)  # the window opens once a reading is in force
        return state

    def stop(self, state, t0: float, t1: float) -> float:
        state["proc"].terminate()
        state["proc"].wait()
        state["thread"].join()
        if not state["samples"]:
            raise UserError(f"{self.command} printed no power rails: run it by hand to see what it prints")
        return held_energy(state["samples"], t0, t1)


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
        # A window opened before the service's first reading would integrate nothing up to it: wait for one.
        deadline = time.perf_counter() + 1.0 + 5 * float(client.interval)
        while not self.samples and time.perf_counter() < deadline:
            time.sleep(0.001)
        if not self.samples:
            raise UserError("jetson-stats' service sent no power readings: check `jtop` by hand")
        mode = client.nvpmodel
        self.source = f"jetson rails via jetson-stats{f' (power mode {mode.name})' if mode else ''}"

    def _update(self, jetson) -> None:
        self.samples.append((time.perf_counter(), jetson.power["tot"]["power"] / 1000))  # mW

    def start(self):
        del self.samples[:-1]  # only the reading in force now matters to this window
        return None

    def stop(self, state, t0: float, t1: float) -> float:
        if not self.samples:
            raise UserError("jetson-stats' service sent no power readings: check `jtop` by hand")
        return held_energy(self.samples, t0, t1)


def jetson_meter() -> EnergyMeter:
    """The board's input rail through Zeus, else lamsc's readers of the INA3221 rails: hwmon, jetson-stats'
    service, tegrastats. Raises UserError naming each way tried and why it failed."""
    reasons = []
    for make in (ZeusJetsonMeter, HwmonRailsMeter, JtopMeter, TegrastatsMeter):
        try:
            return make()
        except UserError as e:
            reasons.append(str(e))
    raise UserError("no Jetson power rails can be read here: " + "; ".join(reasons))
