"""Energy meters against closed forms, on inputs shaped like real boards' (sysfs trees, tegrastats lines of
each L4T, NVML with several GPUs), through Zeus where Zeus reads the counter."""

from __future__ import annotations

import os
import sys
import threading
import time
import types

import pytest

from lamsc.errors import UserError
from lamsc.runtime.energy import (HwmonRailsMeter, JtopMeter, ModelMeter, TegrastatsMeter, ZeusNvmlMeter,
                                  ZeusRaplMeter, board_rails, energy_meter, held_energy, jetson_meter,
                                  parse_tegrastats)
from lamsc.runtime.energy.devices import rapl_package_zones

# A Jetson Thor (L4T R38) line: the board input VIN beside the rails it feeds (their sum is 19.87 W).
THOR = ("RAM 10203/125772MB (lfb 3x4MB) CPU [1%@972,0%@972] GR3D_FREQ 0% cpu@41.2C tj@45.1C "
        "VDD_GPU 9843mW/9843mW VDD_CPU_SOC_MSS 6321mW/6321mW VIN_SYS_5V0 3706mW/3706mW VIN 25530mW/25530mW")
# L4T R39 prints current/average/peak.
R39 = ("RAM 9000/125772MB CPU [3%@1100] VDD_GPU 4925mW/4925mW/4925mW VDD_CPU_SOC_MSS 3010mW/3050mW/3100mW "
       "VIN 15020mW/15000mW/15200mW")


def test_tegrastats_lines_are_parsed_in_every_l4t_format():
    orin = ("11-23-2026 10:00:00 RAM 2300/7620MB (lfb 4x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,off] "
            "EMC_FREQ 0% GR3D_FREQ 0% cpu@45.5C VDD_IN 5012mW/4980mW VDD_CPU_GPU_CV 602mW/600mW VDD_SOC 1445mW/1445mW")
    assert parse_tegrastats(orin) == {"VDD_IN": 5.012, "VDD_CPU_GPU_CV": 0.602, "VDD_SOC": 1.445}
    nano = "RAM 1500/3964MB IRAM 0/252kB(lfb 252kB) POM_5V_IN 2353/2353 POM_5V_GPU 0/0 POM_5V_CPU 279/279"
    assert parse_tegrastats(nano) == {"POM_5V_IN": 2.353, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.279}
    assert parse_tegrastats(R39) == {"VDD_GPU": 4.925, "VDD_CPU_SOC_MSS": 3.010, "VIN": 15.020}  # the current value


@pytest.mark.parametrize("line,watts,rails", [(THOR, 25.530, ["VIN"]), (R39, 15.020, ["VIN"])])
def test_a_board_input_rail_is_never_summed_with_its_parts(line, watts, rails):
    """Thor's VIN (25.5 W) already feeds the rails beside it; summed with them it would read 45.4 W."""
    readings = parse_tegrastats(line)
    assert board_rails(readings) == rails
    assert sum(readings[n] for n in board_rails(readings)) == pytest.approx(watts)
    for inputs in (["POM_5V_IN", "POM_5V_GPU"], ["VDD_IN", "VDD_SOC"], ["SYS5V_IN", "VDD_GPU"], ["VDD_GPU", "VIN"]):
        assert board_rails(inputs) == [n for n in inputs if n.endswith("IN")]
    assert board_rails(["GPU", "CPU", "SOC"]) == ["GPU", "CPU", "SOC"]  # no input rail: the sum
    assert board_rails(["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]) == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]


def _tegrastats_standin(tmp_path, monkeypatch, line):
    script = tmp_path / "tegrastats"
    script.write_text("#!/bin/sh\n"
                      "[ \"$1\" = --interval ] || exit 2\n"
                      "while true; do\n"
                      f"  echo '{line}'\n"
                      "  sleep $(echo \"$2\" | awk '{print $1/1000}')\n"
                      "done\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


@pytest.mark.parametrize("line,watts,rail", [
    ("RAM 2300/7620MB VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 800mW/800mW VDD_SOC 1400mW/1400mW", 5.0, "VDD_IN"),
    (THOR, 25.53, "VIN"), (R39, 15.02, "VIN")])
def test_tegrastats_meter_integrates_the_input_rail_of_a_running_process(tmp_path, monkeypatch, line, watts, rail):
    """A stand-in tegrastats (same flags, same line format) at a constant power: the meter reads it over a
    pipe and integrates the input rail alone over the window, and says which rail it summed."""
    _tegrastats_standin(tmp_path, monkeypatch, line)
    meter = TegrastatsMeter(interval_ms=20)
    with meter.measure() as w:
        time.sleep(0.5)
    assert w.reading.watts == pytest.approx(watts) and not w.reading.estimate
    assert w.reading.source == f"jetson rails via tegrastats: {rail}"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="tegrastats is not on PATH"):
        TegrastatsMeter()


def _ina3221(hw, rails):
    hw.mkdir()
    (hw / "name").write_text("ina3221\n")
    for n, (label, mv, ma) in enumerate(rails, 1):
        (hw / f"in{n}_label").write_text(label)
        (hw / f"in{n}_input").write_text(str(mv))
        (hw / f"curr{n}_input").write_text(str(ma))


def test_hwmon_rails_integrate_the_boards_power(tmp_path):
    _ina3221(tmp_path / "hwmon3", [("VDD_IN", 5000, 1000), ("VDD_CPU_GPU_CV", 1000, 500)])
    meter = HwmonRailsMeter(tmp_path, period_s=0.002)
    assert meter.power_w() == pytest.approx(5.0)  # VDD_IN alone: it already includes the other rails
    with meter.measure() as w:
        time.sleep(0.2)
    assert w.reading.watts == pytest.approx(5.0)
    assert w.reading.source == "jetson rails via hwmon: VDD_IN"
    # an AGX Orin's monitors: no input rail, unconnected (NC) channels, the sum-of-shunts channel
    agx = tmp_path / "agx"
    agx.mkdir()
    _ina3221(agx / "hwmon1", [("VDD_GPU_SOC", 1000, 2000), ("VDD_CPU_CV", 1000, 1000), ("VIN_SYS_5V0", 5000, 400)])
    _ina3221(agx / "hwmon2", [("NC", 3300, 700), ("VDDQ_VDD2_1V8AO", 1800, 500), ("sum of shunt voltages", 1, 1)])
    assert HwmonRailsMeter(agx).power_w() == pytest.approx(2.0 + 1.0 + 2.0 + 0.9)
    thor = tmp_path / "thor"
    thor.mkdir()
    _ina3221(thor / "hwmon4", [("VDD_GPU", 5000, 1969), ("VDD_CPU_SOC_MSS", 5000, 1264), ("VIN", 19000, 1344)])
    assert HwmonRailsMeter(thor).power_w() == pytest.approx(19.0 * 1.344)


def test_held_readings_integrate_as_steps():
    # each reading holds until the next; the one before the window is in force at its start
    assert (held_energy([(0.0, 2.0), (1.0, 4.0), (3.0, 1.0), (9.0, 7.0)], 0.5, 3.5)
            == pytest.approx(2 * 0.5 + 4 * 2 + 1 * 0.5))
    # nothing before the window: its first reading goes back to the start
    assert held_energy([(1.0, 2.0), (2.0, 3.0)], 0.0, 3.0) == pytest.approx(2 * 2 + 3 * 1)
    with pytest.raises(ValueError):
        held_energy([(5.0, 1.0)], 0.0, 1.0)


def _jtop_standin(monkeypatch, watts, service_interval=0.02, reachable=True):
    """A stand-in ``jtop`` module with jetson-stats' names: a client whose service publishes the board's
    total power (mW) to attached observers every ``service_interval`` seconds from a daemon thread while
    ``watts["auto"]``; ``publish()`` sends one update from the caller's thread."""
    module = types.ModuleType("jtop")
    module.JtopException = type("JtopException", (Exception,), {})
    module.clients = []

    class Client:
        def __init__(self, interval=1.0):  # the service keeps its own speed, as when another client set it
            self.interval, self.observers, self.running = service_interval, set(), False
            self.nvpmodel = types.SimpleNamespace(name="15W")
            self.lock = threading.Lock()
            module.clients.append(self)

        def start(self):
            if not reachable:
                raise module.JtopException("The jtop.service is not active. Please run:\nsudo jtop --install-service")
            self.running = True
            threading.Thread(target=self._serve, daemon=True).start()

        def publish(self):
            self.power = {"rail": {}, "tot": {"power": int(watts["now"] * 1000), "avg": 0, "name": "VDD_IN"}}
            for observer in list(self.observers):
                observer(self)

        def _serve(self):
            while self.running:
                with self.lock:
                    if watts.get("auto", True):
                        self.publish()
                time.sleep(self.interval)

        def attach(self, observer):
            self.observers.add(observer)

        def close(self):
            self.running = False

    module.jtop = Client
    monkeypatch.setitem(sys.modules, "jtop", module)
    return module


def test_jtop_meter_integrates_the_services_total_power(monkeypatch):
    watts = {"now": 6.0}
    service = _jtop_standin(monkeypatch, watts)
    meter = jetson_meter()  # no Jetson for Zeus and no hwmon rails on this machine: jetson-stats' service comes next
    assert isinstance(meter, JtopMeter) and meter.source == "jetson rails via jetson-stats (power mode 15W)"
    assert meter.min_window_s == pytest.approx(0.25)  # five of the service's 20 ms updates would be 0.1 s
    with meter.measure() as w:
        time.sleep(0.3)
    assert w.reading.watts == pytest.approx(6.0) and not w.reading.estimate
    client = service.clients[-1]
    with client.lock:  # the service's thread stops publishing: the test sends each update itself
        watts["auto"] = False
    watts["now"] = 2.0
    client.publish()
    with meter.measure() as w:  # 2 W then 10 W: each reading holds from when it arrived
        time.sleep(0.05)
        watts["now"] = 10.0
        before = time.perf_counter()
        client.publish()
        after = time.perf_counter()
        time.sleep(0.05)
    latest = 2 * (after - w.opened) + 10 * (w.closed - after)  # the update's instant lies between the two
    earliest = 2 * (before - w.opened) + 10 * (w.closed - before)
    assert latest <= w.reading.joules <= earliest
    _jtop_standin(monkeypatch, watts, reachable=False)
    with pytest.raises(UserError, match="service is not reachable.*install-service"):
        JtopMeter()


def _powercap(root, zones):
    """A powercap tree as Zeus reads it: intel-rapl/intel-rapl:N with name, energy_uj, max_energy_range_uj."""
    for n, (name, uj) in enumerate(zones):
        z = root / f"intel-rapl:{n}"
        z.mkdir(parents=True)
        (z / "name").write_text(name + "\n")
        (z / "energy_uj").write_text(str(uj))
        (z / "max_energy_range_uj").write_text("262143328850")
        sub = z / f"intel-rapl:{n}:0"  # a subzone (core): part of its package, never counted beside it
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("0")
        (sub / "max_energy_range_uj").write_text("262143328850")


@pytest.fixture
def zeus_rapl(tmp_path, monkeypatch):
    """Zeus pointed at a powercap tree under tmp_path, its CPU singleton reset."""
    import zeus.device.cpu as zeus_cpu
    from zeus.device.cpu import rapl

    root = tmp_path / "intel-rapl"
    monkeypatch.setattr(rapl, "RAPL_DIR", str(root))
    monkeypatch.setattr(zeus_cpu, "_cpus", None)
    yield root
    zeus_cpu._cpus = None


def test_rapl_through_zeus_sums_packages_not_psys(zeus_rapl):
    """A laptop's tree: psys (the platform, packages included) beside package-0. 4 J in the package, 9 J more
    elsewhere on the platform: the package's 4 J, not the 13 J of both zones."""
    _powercap(zeus_rapl, [("package-0", 50_000_000), ("psys", 80_000_000)])
    assert rapl_package_zones(zeus_rapl) == [(0, "package-0")]
    meter = energy_meter("rapl")
    assert isinstance(meter, ZeusRaplMeter) and meter.source == "zeus rapl: package-0"
    with meter.measure() as w:
        (zeus_rapl / "intel-rapl:0" / "energy_uj").write_text(str(54_000_000))
        (zeus_rapl / "intel-rapl:1" / "energy_uj").write_text(str(93_000_000))
    assert w.reading.joules == pytest.approx(4.0) and not w.reading.estimate


def test_rapl_through_zeus_sums_every_package(zeus_rapl):
    _powercap(zeus_rapl, [("package-0", 1_000_000), ("package-1", 2_000_000)])
    meter = ZeusRaplMeter()
    assert meter.source == "zeus rapl: package-0 + package-1"
    with meter.measure() as w:
        (zeus_rapl / "intel-rapl:0" / "energy_uj").write_text(str(2_500_000))
        (zeus_rapl / "intel-rapl:1" / "energy_uj").write_text(str(4_000_000))
    assert w.reading.joules == pytest.approx(3.5)


@pytest.fixture
def two_gpus(monkeypatch):
    """nvidia-ml-py's own module with its library calls replaced: two GPUs with their own mJ counters and
    UUIDs, as NVML numbers them. Zeus's GPU singleton is reset; no CUDA runtime reports a UUID."""
    import pynvml

    import lamsc.runtime.energy.devices as devices

    gpus = [{"uuid": "GPU-aaaaaaaa-0000", "name": "NVIDIA H200", "mJ": 1_000_000},
            {"uuid": "GPU-bbbbbbbb-1111", "name": "NVIDIA L40S", "mJ": 7_000_000}]
    for name, fn in {
        "nvmlInit": lambda: None, "nvmlShutdown": lambda: None, "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i], "nvmlDeviceGetUUID": lambda h: h["uuid"],
        "nvmlDeviceGetName": lambda h: h["name"], "nvmlDeviceGetTotalEnergyConsumption": lambda h: h["mJ"],
        "nvmlDeviceGetArchitecture": lambda h: pynvml.NVML_DEVICE_ARCH_HOPPER,
        "nvmlDeviceGetC2cModeInfoV": _raise(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)),
    }.items():
        monkeypatch.setattr(pynvml, name, fn)
    monkeypatch.setattr(devices, "cuda_uuid", lambda i: None)
    _reset_zeus_gpus()
    yield gpus
    _reset_zeus_gpus()


def _reset_zeus_gpus():
    """Zeus keeps its GPUs in a singleton and caches whether NVML initialised: start both afresh."""
    import zeus.device.gpu as zeus_gpu
    from zeus.device.gpu.nvidia import nvml_is_available

    zeus_gpu._gpus = None
    nvml_is_available.cache_clear()


def _raise(error):
    def fail(*args):
        raise error
    return fail


def test_nvml_through_zeus_reads_the_visible_gpu(two_gpus, monkeypatch):
    """CUDA_VISIBLE_DEVICES=1: the work's CUDA device 0 is NVML GPU 1, whose counter is read (mJ -> J)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = energy_meter("nvml")
    assert isinstance(meter, ZeusNvmlMeter) and meter.source == "zeus nvml: NVIDIA L40S (CUDA 0 = NVML 1)"
    with meter.measure() as w:
        two_gpus[0]["mJ"] += 9000
        two_gpus[1]["mJ"] += 2500
    assert w.reading.joules == pytest.approx(2.5) and not w.reading.estimate


def test_nvml_device_is_found_by_uuid(two_gpus, monkeypatch):
    import lamsc.runtime.energy.devices as devices

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    meter = ZeusNvmlMeter(0)
    assert meter.source == "zeus nvml: NVIDIA H200 (CUDA 0 = NVML 0)"
    # CUDA ordered the fastest first: its device 0 is NVML's GPU 1, by UUID
    monkeypatch.setattr(devices, "cuda_uuid", lambda i: ["GPU-bbbbbbbb-1111", "GPU-aaaaaaaa-0000"][i])
    meter = ZeusNvmlMeter(0)
    assert meter.source == "zeus nvml: NVIDIA L40S (CUDA 0 = NVML 1)"
    with meter.measure() as w:
        two_gpus[1]["mJ"] += 1200
    assert w.reading.joules == pytest.approx(1.2)
    # CUDA_VISIBLE_DEVICES=1 under that order is NVML GPU 0, which Zeus (reading it as NVML 1) does not see
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    monkeypatch.setattr(devices, "cuda_uuid", lambda i: "GPU-aaaaaaaa-0000")
    _reset_zeus_gpus()  # a new process: Zeus reads the variable once
    with pytest.raises(UserError, match="NVML GPU 0, which Zeus does not see.*CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        ZeusNvmlMeter(0)


def test_nvml_errors_name_the_fix(two_gpus, monkeypatch):
    import pynvml

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-bbbb")  # a UUID prefix, as CUDA accepts: Zeus cannot parse it
    with pytest.raises(UserError, match="Zeus cannot read CUDA_VISIBLE_DEVICES.*NVML indices"):
        ZeusNvmlMeter(0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-")
    _reset_zeus_gpus()
    with pytest.raises(UserError, match="matches 2 of NVML's GPUs"):
        ZeusNvmlMeter(0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    _reset_zeus_gpus()
    with pytest.raises(UserError, match="CUDA device 1 is not visible"):
        ZeusNvmlMeter(1)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption",
                        _raise(pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)))  # what an Orin's NVML answers
    with pytest.raises(UserError, match="not available here .*--energy jetson"):
        ZeusNvmlMeter(0)


def test_meters_say_what_they_are(monkeypatch):
    import lamsc.runtime.energy as energy

    for name in ("jetson_meter", "ZeusNvmlMeter", "ZeusRaplMeter"):  # a machine with no counter at all
        monkeypatch.setattr(energy, name, _raise(UserError("absent")))
    assert isinstance(energy_meter("auto", cores=2), ModelMeter)
    m = ModelMeter("cpu", cores=2)
    assert m.estimate and m.watts == 10.0
    assert m.source == "model estimate: 10 W declared for 2 busy cores of a server CPU at 5 W each x measured time"
    m = ModelMeter("orin-nano")
    assert m.watts == 15.0
    assert m.source == "model estimate: 15 W declared for Jetson Orin Nano 8GB (15 W mode) x measured time"
    with pytest.raises(UserError, match="unknown energy meter"):
        energy_meter("joulemeter")


def test_jetson_meter_says_each_way_it_tried(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "jtop", None)  # jetson-stats not installed
    with pytest.raises(UserError, match="no Jetson power rails.*Zeus.*hwmon.*jetson-stats.*tegrastats is not on PATH"):
        energy_meter("jetson")


def test_auto_meters_the_processor_the_work_runs_on(zeus_rapl, two_gpus, monkeypatch):
    """A GPU host with RAPL: CPU inference is metered by the packages, GPU inference by its GPU."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _powercap(zeus_rapl, [("package-0", 1_000_000)])
    assert isinstance(energy_meter("auto", work_on="cpu"), ZeusRaplMeter)
    assert isinstance(energy_meter("auto", work_on="gpu"), ZeusNvmlMeter)
