"""Runtime: the exported bundle end to end against PyTorch, the two-process link, energy meters (against
closed forms on sysfs-shaped trees), radio airtime, and the profile command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lamsc.errors import UserError
from lamsc.export.bundle import write_bundle
from lamsc.runtime.backends import OnnxRuntimeBackend, TorchBackend
from lamsc.runtime.deployment import Deployment
from lamsc.runtime.endpoints import EdgeReceiver, EdgeTransmitter
from lamsc.runtime.energy import (JetsonMeter, JtopMeter, ModelMeter, NvmlMeter, RaplMeter, TegrastatsMeter,
                                  board_rails, energy_meter, held_energy, jetson_meter, parse_tegrastats)
from lamsc.runtime.latency import Latency
from lamsc.runtime.link import run_link
from lamsc.runtime.radio import radio
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.transmission import transmit


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(load_model(), tmp_path_factory.mktemp("b") / "bundle", "fp32",
                        images=bundled_photos(["chelsea"]))


def test_bundle_end_to_end_psnr_is_pytorchs(bundle):
    model, seg = load_model(), FallbackSegmenter()
    ends = {name: (EdgeTransmitter(b, model.config, seg, 10.0), EdgeReceiver(b))
            for name, b in (("torch", TorchBackend(model, device="cpu")), ("ort", OnnxRuntimeBackend(bundle)))}
    for k, item in enumerate(bundled_photos(["astronaut", "coffee", "rocket"])):
        r = {name: transmit(item.pixels, tx, rx, Channel("awgn", 10.0), seed=k) for name, (tx, rx) in ends.items()}
        assert abs(r["torch"].psnr - r["ort"].psnr) < 0.1
        assert abs(r["torch"].bits - r["ort"].bits) <= 0.01 * r["torch"].bits  # a level may flip at a boundary


def test_the_radio_sends_unit_power_whatever_the_graph_computed(bundle, photo):
    """A reduced-precision transmitter graph can miss its own power normalisation (int8 of the default codec:
    up to +1.8 dB); what is sent is at unit power, so such a graph gains no SNR from it."""
    from lamsc.semcom.payload import unpack

    class Louder:  # the bundle's transmitter with its output 1.5x too large (+3.5 dB)
        def __init__(self, backend):
            self.backend, self.gpu_seconds = backend, None

        def run(self, graph, feeds):
            out = self.backend.run(graph, feeds)
            return {**out, "z": out["z"] * 1.5} if graph == "transmitter" else out

        def synchronize(self):
            pass

    model, seg = load_model(), FallbackSegmenter()
    ort_backend = OnnxRuntimeBackend(bundle)
    sent = {name: EdgeTransmitter(b, model.config, seg, 10.0).send(photo)
            for name, b in (("graph", ort_backend), ("louder", Louder(ort_backend)))}
    values = {k: unpack(v.payload).features for k, v in sent.items()}
    kept = values["louder"].values[values["louder"].kept_mask]
    assert np.mean(kept.astype(np.float64) ** 2) == pytest.approx(1.0, abs=0.02)  # 8-bit values: rounding only
    np.testing.assert_allclose(values["louder"].values, values["graph"].values, atol=1e-6)


def test_loopback_link_delivers_everything_clean_and_reports_damage(bundle):
    images = [p.pixels for p in bundled_photos(["chelsea", "coffee"])]
    clean = run_link(Deployment(str(bundle.root), "onnxruntime"), images, Channel("digital-qpsk", 25.0))
    assert clean.errors == [] and clean.delivered == [0, 1] and clean.damaged == [] and clean.missing == []
    assert all(r["bit_errors"] == 0 for r in clean.received.values())
    noisy = run_link(Deployment(None, "torch"), images, Channel("digital-qpsk", 4.0))
    assert noisy.errors == [] and noisy.damaged == [0, 1] and noisy.missing == []
    assert all(r["bit_errors"] > 0 and r["reason"] for r in noisy.received.values())


def _rapl_tree(root, energies, max_range):
    for i, e in enumerate(energies):
        z = root / f"intel-rapl:{i}"
        z.mkdir(parents=True)
        (z / "energy_uj").write_text(str(e))
        (z / "max_energy_range_uj").write_text(str(max_range))
        (root / f"intel-rapl:{i}:0").mkdir()  # a subzone: must not be counted twice


def test_rapl_counts_across_wraparound(tmp_path):
    _rapl_tree(tmp_path, [999_000_000, 5_000_000], 1_000_000_000)
    meter = RaplMeter(tmp_path)
    with meter.measure() as w:
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("500000")        # wrapped: +1.5 J
        (tmp_path / "intel-rapl:1" / "energy_uj").write_text("7000000")       # +2 J
    assert w.reading.joules == pytest.approx(3.5) and not w.reading.estimate
    assert "rapl (2 packages)" == w.reading.source


def test_jetson_rails_integrate_power(tmp_path):
    hw = tmp_path / "hwmon3"
    hw.mkdir()
    (hw / "name").write_text("ina3221\n")
    for n, label, mv, ma in ((1, "VDD_IN", 5000, 1000), (2, "VDD_CPU_GPU_CV", 1000, 500)):
        (hw / f"in{n}_label").write_text(label)
        (hw / f"in{n}_input").write_text(str(mv))
        (hw / f"curr{n}_input").write_text(str(ma))
    meter = JetsonMeter(tmp_path, period_s=0.002)
    assert meter.power_w() == pytest.approx(5.0)  # VDD_IN alone: it already includes the other rails
    import time

    with meter.measure() as w:
        time.sleep(0.2)
    assert w.reading.watts == pytest.approx(5.0, rel=0.02)
    for f in hw.glob("*"):  # an AGX Orin's second monitor: no input rail, an unconnected channel
        f.unlink()
    (hw / "name").write_text("ina3221\n")
    for n, label, mv, ma in ((1, "VDDQ_VDD2_1V8AO", 1800, 500), (2, "NC", 3300, 700), (3, "VIN_SYS_5V0", 5000, 400)):
        (hw / f"in{n}_label").write_text(label)
        (hw / f"in{n}_input").write_text(str(mv))
        (hw / f"curr{n}_input").write_text(str(ma))
    assert JetsonMeter(tmp_path).power_w() == pytest.approx(1.8 * 0.5 + 5.0 * 0.4)
    assert board_rails(["POM_5V_IN", "POM_5V_GPU"]) == ["POM_5V_IN"]  # a Nano's input rail
    assert board_rails(["GPU", "CPU", "SOC"]) == ["GPU", "CPU", "SOC"]  # no input rail: the sum


def test_nvml_meter_differences_the_millijoule_counter(monkeypatch):
    """nvml's total-energy counter is in mJ since the driver loaded; a window is the difference, in J.
    The stand-in module has nvidia-ml-py's names, so a renamed call fails here rather than on a GPU."""
    import sys
    import types

    counter = {"mJ": 1_000_000}
    nvml = types.ModuleType("pynvml")
    nvml.NVMLError = type("NVMLError", (Exception,), {})
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda i: ("gpu", i)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda h: counter["mJ"]
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    meter = energy_meter("nvml")
    assert isinstance(meter, NvmlMeter) and meter.source == "nvml (NVIDIA H100 80GB HBM3)"
    with meter.measure() as w:
        counter["mJ"] += 2500
    assert w.reading.joules == pytest.approx(2.5) and not w.reading.estimate

    def not_supported(h):
        raise nvml.NVMLError("Not Supported")

    nvml.nvmlDeviceGetTotalEnergyConsumption = not_supported  # what an Orin's NVML answers
    with pytest.raises(UserError, match="not available here .*--energy jetson"):
        NvmlMeter()


def test_tegrastats_lines_are_parsed_in_every_jetpack_format():
    orin = ("11-23-2026 10:00:00 RAM 2300/7620MB (lfb 4x4MB) SWAP 0/3810MB (cached 0MB) CPU [2%@729,off] "
            "EMC_FREQ 0% GR3D_FREQ 0% cpu@45.5C VDD_IN 5012mW/4980mW VDD_CPU_GPU_CV 602mW/600mW VDD_SOC 1445mW/1445mW")
    assert parse_tegrastats(orin) == {"VDD_IN": 5.012, "VDD_CPU_GPU_CV": 0.602, "VDD_SOC": 1.445}
    nano = "RAM 1500/3964MB IRAM 0/252kB(lfb 252kB) POM_5V_IN 2353/2353 POM_5V_GPU 0/0 POM_5V_CPU 279/279"
    assert parse_tegrastats(nano) == {"POM_5V_IN": 2.353, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.279}


def test_tegrastats_meter_integrates_the_input_rail_of_a_running_process(tmp_path, monkeypatch):
    """A stand-in tegrastats (same flags, same line format) at 5 W on VDD_IN: the meter reads it over a
    pipe and integrates 5 W over the window; the other rails are inside VDD_IN and not added."""
    script = tmp_path / "tegrastats"
    script.write_text("#!/bin/sh\n"
                      "[ \"$1\" = --interval ] || exit 2\n"
                      "while true; do\n"
                      "  echo 'RAM 2300/7620MB VDD_IN 5000mW/5000mW VDD_CPU_GPU_CV 800mW/800mW VDD_SOC 1400mW/1400mW'\n"
                      "  sleep $(echo \"$2\" | awk '{print $1/1000}')\n"
                      "done\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    meter = TegrastatsMeter(interval_ms=20)
    import time

    with meter.measure() as w:
        time.sleep(0.5)
    assert w.reading.watts == pytest.approx(5.0, rel=0.05) and not w.reading.estimate  # rel: stopping the process
    assert "tegrastats" in w.reading.source
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="tegrastats is not on PATH"):
        TegrastatsMeter()


def test_held_readings_integrate_as_steps():
    # each reading holds until the next; the one before the window is in force at its start
    assert held_energy([(0.0, 2.0), (1.0, 4.0), (3.0, 1.0), (9.0, 7.0)], 0.5, 3.5) == pytest.approx(2 * 0.5 + 4 * 2 + 1 * 0.5)
    # nothing before the window: its first reading goes back to the start
    assert held_energy([(1.0, 2.0), (2.0, 3.0)], 0.0, 3.0) == pytest.approx(2 * 2 + 3 * 1)
    with pytest.raises(ValueError):
        held_energy([(5.0, 1.0)], 0.0, 1.0)


def _jtop_standin(monkeypatch, watts, service_interval=0.02, reachable=True):
    """A stand-in ``jtop`` module with jetson-stats' names: a client whose service publishes the board's
    total power (mW) to attached observers every ``service_interval`` seconds from a daemon thread."""
    import sys
    import threading
    import time
    import types

    module = types.ModuleType("jtop")
    module.JtopException = type("JtopException", (Exception,), {})

    class Client:
        def __init__(self, interval=1.0):  # the service keeps its own speed, as when another client set it
            self.interval, self.observers, self.running = service_interval, set(), False
            self.nvpmodel = types.SimpleNamespace(name="15W")

        def start(self):
            if not reachable:
                raise module.JtopException("The jtop.service is not active. Please run:\nsudo jtop --install-service")
            self.running = True
            threading.Thread(target=self._serve, daemon=True).start()

        def _serve(self):
            while self.running:
                self.power = {"rail": {}, "tot": {"power": int(watts["now"] * 1000), "avg": 0, "name": "VDD_IN"}}
                for observer in list(self.observers):
                    observer(self)
                time.sleep(self.interval)

        def attach(self, observer):
            self.observers.add(observer)

        def close(self):
            self.running = False

    module.jtop = Client
    monkeypatch.setitem(sys.modules, "jtop", module)


def test_jtop_meter_integrates_the_services_total_power(monkeypatch):
    import time

    watts = {"now": 6.0}
    _jtop_standin(monkeypatch, watts)
    meter = jetson_meter()  # no hwmon rails on this machine: jetson-stats' service comes next
    assert isinstance(meter, JtopMeter) and meter.source == "jetson rails via jetson-stats (power mode 15W)"
    assert meter.min_window_s == pytest.approx(0.25)  # five of the service's 20 ms updates would be 0.1 s
    with meter.measure() as w:
        time.sleep(0.3)
    assert w.reading.watts == pytest.approx(6.0, rel=1e-3) and not w.reading.estimate  # rel: the window's edges
    watts["now"] = 2.0
    time.sleep(0.05)
    with meter.measure() as w:  # 2 W then 10 W: the integral follows the step to within one update
        time.sleep(0.2)
        watts["now"] = 10.0
        time.sleep(0.2)
    assert w.reading.joules == pytest.approx(2 * 0.2 + 10 * 0.2, abs=8 * 0.03)
    _jtop_standin(monkeypatch, watts, reachable=False)
    with pytest.raises(UserError, match="service is not reachable.*install-service"):
        JtopMeter()


def test_meters_say_what_they_are():
    assert isinstance(energy_meter("auto"), ModelMeter)  # no counter on this machine
    m = ModelMeter("orin-nano")
    assert m.estimate and "estimate" in m.source and m.watts == 15.0
    with pytest.raises(UserError, match="not available|needs nvidia-ml-py"):
        energy_meter("nvml")
    with pytest.raises(UserError, match="no Jetson power rails.*hwmon.*jetson-stats.*tegrastats is not on PATH"):
        energy_meter("jetson")  # each way it tried, and why each failed
    with pytest.raises(UserError, match="unknown energy meter"):
        energy_meter("joulemeter")


def test_radio_airtime_and_energy_closed_forms():
    wifi, lora, lte = radio("wifi"), radio("lora"), radio("lte")
    assert wifi.airtime_s(10.0, channel_uses=13_000_000) == pytest.approx(1.0)
    assert wifi.energy_j(10.0, channel_uses=1_300_000) == pytest.approx(0.1 * 0.18 * 3.3)
    assert lora.airtime_s(10.0, bits=5469) == pytest.approx(1.0)
    # 16-QAM 1/2 is the best MCS at 10 dB: 2 bits per channel use
    assert wifi.airtime_s(10.0, bits=26_000_000) == pytest.approx(1.0)
    t = lte.airtime_s(10.0, bits=14_400_000)
    assert t == pytest.approx(1.0) and lte.energy_j(10.0, bits=14_400_000) == pytest.approx(1.28804 + 0.43839 * 14.4)
    assert radio("nbiot").bits_per_use(30.0) == pytest.approx(4 / 3)  # capped at QPSK 2/3
    assert wifi.airtime_s(-5.0, bits=100) == float("inf")  # below the most robust MCS nothing gets through


def test_latency_percentiles_are_numpys():
    s = [0.001 * i for i in range(1, 101)]
    lat = Latency.of(s)
    assert lat.median_ms == pytest.approx(np.median(s) * 1e3) and lat.p99_ms == pytest.approx(np.percentile(s, 99) * 1e3)


def test_profile_command_reports_energy_with_its_source(tmp_path, photo, capsys):
    from PIL import Image

    from lamsc.cli import main

    img = tmp_path / "coffee.png"
    Image.fromarray(photo).save(img)
    assert main(["profile", "--images", str(img), "--repeats", "2", "--radio", "lte", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "profile.json").read_text())
    row = result["images"][0]
    assert result["energy_meter"]["estimate"] and result["energy_meter"]["source"].startswith("model")
    e = row["lamsc"]["energy"]
    assert e["total_j"] == pytest.approx(e["compute_j"] + e["radio_j"]) and e["radio_j"] > 0
    assert sum(e["stages_j"].values()) == pytest.approx(e["compute_j"])
    assert set(row["lamsc"]["latency"]) >= {"segment", "encode", "pack", "total", "receive"}
    assert row["jpeg"]["psnr"] >= row["lamsc"]["psnr"] or row["jpeg"]["quality"] == 95
    assert row["lamsc"]["bits"] > 0 and 15 < row["lamsc"]["psnr"] < 40
    assert (tmp_path / "energy.png").stat().st_size > 10_000
    # the table for people, piped: every figure printed whole, none cut to fit 80 columns
    table = capsys.readouterr().out
    cells = next(line for line in table.splitlines() if "coffee" in line).split("│")
    assert [c.strip() for c in cells[2:4]] == [f"{row['lamsc']['bits'] / 1e3:.1f}", f"{row['lamsc']['psnr']:.2f}"]
    assert cells[-2].strip() == f"{row['jpeg']['energy']['total_j'] * 1e3:.1f}"


def test_segment_everything_on_the_exported_skb_graphs(tiny_sam_checkpoint, tmp_path):
    """A bundle with SAM graphs segments through them; masks, boxes and areas agree with each other."""
    from lamsc.runtime.skb import GraphSamSegmenter
    from lamsc.semcom.sam_checkpoint import load_sam
    from lamsc.semcom.segmenter import MaskGenerationOptions
    from lamsc.semcom.segments import Segments

    sam, arch = load_sam(tiny_sam_checkpoint)
    photos = bundled_photos(["chelsea"])
    b = write_bundle(load_model(), tmp_path / "b", "fp32", sam=sam, sam_name="tiny", images=photos)
    assert set(b.graphs) == {"transmitter", "receiver", "skb_encoder", "skb_decoder"}
    # random weights: no mask would pass SAM's default quality filters, so open them
    options = MaskGenerationOptions(points_per_side=4, pred_iou_thresh=-10.0, stability_score_thresh=0.0)
    seg = GraphSamSegmenter(OnnxRuntimeBackend(b), options).segment(photos[0].pixels)
    assert len(seg.masks) > 0 and seg.masks.shape[1:] == photos[0].pixels.shape[:2]
    ref = Segments.from_masks(seg.masks, seg.scores, "ref")
    nonempty = seg.areas > 0
    assert (seg.boxes[nonempty] == ref.boxes[nonempty]).all() and (seg.areas == ref.areas).all()


def _tensorrt_and_pycuda_standins():
    """Stand-ins with TensorRT 10's and pycuda's names, for the TensorRT backend's own logic (name-based I/O,
    shapes, device buffers kept between runs, copies and timing events on a stream). An "engine" is the ONNX
    graph it would be built from, run by ONNX Runtime; device memory is bounds-checked bytes. TensorRT itself cannot be
    installed here: its numerics are not what this checks."""
    import time
    import types

    import onnxruntime as ort

    memory, allocations = {}, []
    cuda = types.ModuleType("pycuda.driver")
    cuda.Stream = lambda: types.SimpleNamespace(handle=7, synchronize=lambda: None)

    class Event:  # the host clock stands in for the stream's
        def record(self, stream):
            self.t = time.perf_counter()

        def time_since(self, other):
            return (self.t - other.t) * 1e3

    cuda.Event = Event

    def mem_alloc(nbytes):
        allocations.append(nbytes)
        memory[len(allocations)] = bytearray(nbytes)
        return len(allocations)  # int(dev) is the address

    def htod(dev, host, stream):
        data = host.tobytes()
        assert len(data) <= len(memory[dev]), "input larger than its device buffer"
        memory[dev][:len(data)] = data

    def dtoh(host, dev, stream):
        assert host.nbytes <= len(memory[dev]), "output larger than its device buffer"
        host[...] = np.frombuffer(bytes(memory[dev][:host.nbytes]), host.dtype).reshape(host.shape)

    cuda.mem_alloc, cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = mem_alloc, htod, dtoh
    dtypes = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(uint8)": np.uint8}

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses, self.outputs = engine, {}, {}, None

        def set_input_shape(self, name, shape):
            self.shapes[name], self.outputs = tuple(shape), None

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def _run(self):
            feeds = {}
            for i in self.engine.session.get_inputs():
                shape, dtype = self.shapes[i.name], dtypes[i.type]
                n = int(np.prod(shape)) * np.dtype(dtype).itemsize
                feeds[i.name] = np.frombuffer(bytes(memory[self.addresses[i.name]][:n]), dtype).reshape(shape)
            return dict(zip(self.engine.outputs, self.engine.session.run(None, feeds)))

        def get_tensor_shape(self, name):  # TensorRT infers output shapes from the input shapes set
            if self.outputs is None:  # the inputs are already in device memory: run once, keep for execution
                self.outputs = self._run()
            return self.outputs[name].shape

        def execute_async_v3(self, stream_handle):
            outputs, self.outputs = self.outputs or self._run(), None
            for name, value in outputs.items():
                data = np.ascontiguousarray(value).tobytes()
                assert len(data) <= len(memory[self.addresses[name]]), "output larger than its device buffer"
                memory[self.addresses[name]][:len(data)] = data
            return True

    class Engine:
        def __init__(self, onnx_bytes):
            self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.types = {t.name: dtypes[t.type] for t in self.session.get_inputs() + self.session.get_outputs()}
            self.num_io_tensors = len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return self.types[name]

        def create_execution_context(self):
            return Context(self)

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0 (stand-in)"
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = np.dtype
    trt.Runtime = lambda logger: types.SimpleNamespace(deserialize_cuda_engine=Engine)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    return {"tensorrt": trt, "pycuda": pycuda, "pycuda.driver": cuda,
            "pycuda.autoinit": types.ModuleType("pycuda.autoinit")}, allocations


def test_tensorrt_backend_io_matches_onnxruntime_and_keeps_its_buffers(bundle, tmp_path, monkeypatch):
    import shutil
    import sys

    from lamsc.export.bundle import load_bundle
    from lamsc.runtime.backends import TensorRTBackend

    root = tmp_path / "bundle"
    shutil.copytree(bundle.root, root)
    (root / "engines").mkdir()
    with pytest.raises(UserError, match="TensorRT is not installed|engines/transmitter.engine not found"):
        TensorRTBackend(load_bundle(root))
    modules, allocations = _tensorrt_and_pycuda_standins()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    with pytest.raises(UserError, match="build the engines on this device first"):
        TensorRTBackend(load_bundle(root))
    for g in bundle.graphs:  # the stand-in's "engine" is the ONNX graph itself
        shutil.copy(bundle.path(g), root / "engines" / f"{g}.engine")
    trt_backend, ort_backend = TensorRTBackend(load_bundle(root)), OnnxRuntimeBackend(bundle)
    assert trt_backend.name.startswith("tensorrt 10.3.0")
    model, seg = load_model(), FallbackSegmenter()
    ends = {name: (EdgeTransmitter(b, model.config, seg, 10.0), EdgeReceiver(b))
            for name, b in (("tensorrt", trt_backend), ("ort", ort_backend))}
    photos = bundled_photos(["chelsea", "astronaut", "chelsea"])  # 300x451, then larger, then the first again
    for k, item in enumerate(photos):
        if k == 2:
            allocated = len(allocations)
        r = {name: transmit(item.pixels, tx, rx, Channel("awgn", 10.0), seed=k) for name, (tx, rx) in ends.items()}
        assert r["tensorrt"].psnr == r["ort"].psnr and r["tensorrt"].bits == r["ort"].bits
    assert len(allocations) == allocated  # a smaller image reuses the buffers the larger one grew
    assert trt_backend.gpu_seconds > 0 and ort_backend.gpu_seconds is None
    sent = ends["tensorrt"][0].send(photos[0].pixels)
    assert 0 < sent.gpu_seconds["encode"] <= sent.seconds["encode"]  # the graph's share of its stage


@pytest.mark.gpu
def test_torch_backend_times_its_graphs_by_cuda_events(photo):
    """On a GPU the stages' graph time comes from CUDA events: positive, and within the stage's host time."""
    model, seg = load_model(), FallbackSegmenter()
    backend = TorchBackend(model, device="cuda")
    tx, rx = EdgeTransmitter(backend, model.config, seg, 10.0), EdgeReceiver(backend)
    for _ in range(3):  # the first runs include CUDA's lazy initialisation
        sent = tx.send(photo)
    assert 0 < sent.gpu_seconds["encode"] <= sent.seconds["encode"]
    result = transmit(photo, tx, rx, Channel("awgn", 10.0), seed=0)
    assert rx.gpu_seconds > 0 and result.psnr > 15
