"""Runtime: the exported bundle end to end against PyTorch, the two-process link, energy meters (against
closed forms on sysfs-shaped trees), radio airtime, and the profile command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from lamsc.errors import UserError
from lamsc.export.bundle import SamExport, write_bundle
from lamsc.runtime.backends import OnnxRuntimeBackend
from lamsc.semcom.torch_backend import TorchBackend
from lamsc.runtime.deployment import Deployment
from lamsc.runtime.latency import Latency
from lamsc.runtime.link import run_link
from lamsc.runtime.radio import radio
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.transmission import Receiver, Transmitter, model_inputs, transmit


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_bundle(load_model(), tmp_path_factory.mktemp("b") / "bundle", "fp32",
                        images=bundled_photos(["chelsea"]))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2,
                    reason="needs CPU affinity and two cores")
def test_onnxruntime_runs_on_the_cores_the_process_may_use(bundle):
    """Restricted to one core (taskset, a cpuset), a session runs one intra-op thread, not one per core of
    the machine that would share that core."""
    code = ("import os, sys\n"
            "from lamsc.export.sessions import session, usable_cores\n"
            "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
            "s = session(sys.argv[1], ['CPUExecutionProvider'])\n"
            "print(usable_cores(), s.get_session_options().intra_op_num_threads)\n")
    out = subprocess.run([sys.executable, "-c", code, str(bundle.path("receiver"))], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ["1", "1"]


def test_bundle_end_to_end_psnr_is_pytorchs(bundle):
    model, seg = load_model(), FallbackSegmenter()
    ends = {name: (Transmitter(b, seg), Receiver(b))
            for name, b in (("torch", TorchBackend(model, device="cpu")), ("ort", OnnxRuntimeBackend(bundle)))}
    for k, item in enumerate(bundled_photos(["astronaut", "coffee", "rocket"])):
        r = {name: transmit(item.pixels, tx, rx, Channel("awgn", 10.0), seed=k) for name, (tx, rx) in ends.items()}
        assert abs(r["torch"].psnr - r["ort"].psnr) < 0.1
        assert abs(r["torch"].bits - r["ort"].bits) <= 0.01 * r["torch"].bits  # a level may flip at a boundary


def test_torch_and_onnxruntime_backends_send_the_same_payload(bundle):
    """The one Transmitter over either backend, on every bundled photograph, ASC on and off: the same sizes,
    the same depth map except where two fp32 engines' summation orders put a position's depth on the other
    side of a level boundary (one level, rarely), the quantiser's scale within a few float32 roundings, and the same
    values except where a feature crosses a rounding boundary the same way (one step, rarely)."""
    from lamsc.semcom.payload import parse, unpack_bits

    from lamsc.semcom.segmenter import CachedSegmenter

    backends = {"torch": TorchBackend(load_model(), device="cpu"), "ort": OnnxRuntimeBackend(bundle)}
    seg, photos = CachedSegmenter(FallbackSegmenter()), bundled_photos()  # each photograph segmented once
    flipped = total = identical = 0
    cases = [(item, asc) for item in photos for asc in (True, False)]
    for item, asc in cases:
        a, b = (parse(Transmitter(backends[n], seg, asc, snr_db=10.0).send(item.pixels).payload) for n in backends)
        assert (a.height, a.width, a.shape, a.num_levels, a.asc) == (b.height, b.width, b.shape, b.num_levels, asc)
        if not np.array_equal(a.levels, b.levels):
            # each moved position's depth lies within float32 rounding of a level boundary in both engines (a
            # flat region, as retina's black surround, puts many positions at one depth: they move together)
            x, masks = model_inputs(item.pixels, seg.segment(item.pixels), backends["torch"].config.segments)
            feeds = {"image": x, "masks": masks, "snr_db": np.array([10.0], np.float32)}
            at = a.levels != b.levels
            for backend in backends.values():
                depth = backend.run("transmitter", feeds)["depth"][0, 0][: a.levels.shape[0], : a.levels.shape[1]]
                scaled = depth[at] * a.num_levels
                assert np.abs(scaled - np.round(scaled)).max() < 1e-4
            assert np.abs(a.levels - b.levels).max() <= 1
            continue  # the value streams no longer line up
        # the scale is the largest kept magnitude at unit power: a feature and a mean square, each as its engine
        # sums it, so a few float32 roundings of each apart (1e-6 relative has been seen)
        assert b.scale == pytest.approx(a.scale, rel=1e-5)
        count = int(a.levels.sum()) * (a.shape[0] // a.num_levels)
        qa, qb = (unpack_bits(p.value_bytes, p.value_bits, count) for p in (a, b))
        assert np.abs(qa - qb).max(initial=0) <= 1
        flipped, total = flipped + int((qa != qb).sum()), total + count
        identical += a.value_bytes == b.value_bytes
    # how many payloads come out byte-identical depends on the CPU's kernels (19 of 20 on one AVX-512 Xeon, 5 on
    # another with AVX-512 FP16, 13 on AVX2): what holds everywhere is that a flipped value is rare and one step
    assert flipped <= 1e-4 * total, (flipped, total, identical)


def test_the_radio_sends_unit_power_whatever_the_graph_computed(bundle, photo):
    """A reduced-precision transmitter graph can miss its own power normalisation (int8 of the default codec:
    up to +1.8 dB); what is sent is at unit power, so such a graph gains no SNR from it."""
    from lamsc.semcom.payload import unpack

    class Louder:  # the bundle's transmitter with its output 1.5x too large (+3.5 dB)
        def __init__(self, backend):
            self.backend, self.gpu_seconds, self.config, self.processor = backend, None, backend.config, "cpu"

        def run(self, graph, feeds):
            out = self.backend.run(graph, feeds)
            return {**out, "features": out["features"] * 1.5} if graph == "transmitter" else out

        def synchronize(self):
            pass

    seg = FallbackSegmenter()
    ort_backend = OnnxRuntimeBackend(bundle)
    sent = {name: Transmitter(b, seg, snr_db=10.0).send(photo)
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


def test_radio_airtime_and_energy_closed_forms():
    wifi, lora, lte = radio("wifi"), radio("lora"), radio("lte")
    assert wifi.airtime_s(10.0, channel_uses=13_000_000) == pytest.approx(1.0)
    assert wifi.energy_j(10.0, channel_uses=1_300_000) == pytest.approx(0.1 * 0.18 * 3.3)
    assert lora.airtime_s(10.0, bits=5469) == pytest.approx(1.0)
    # 16-QAM 1/2 is the best MCS at 8 dB: 2 bits per channel use
    assert wifi.airtime_s(8.0, bits=26_000_000) == pytest.approx(1.0)
    t = lte.airtime_s(8.0, bits=14_400_000)
    assert t == pytest.approx(1.0) and lte.energy_j(8.0, bits=14_400_000) == pytest.approx(1.28804 + 0.43839 * 14.4)
    assert radio("nbiot").bits_per_use(30.0) == pytest.approx(4 / 3)  # capped at QPSK 2/3
    assert wifi.airtime_s(-5.0, bits=100) == float("inf")  # below the most robust MCS nothing gets through


def test_radio_energy_rule_charges_digital_radios_coded_bits_and_analog_ones_channel_uses():
    wifi, sdr, lora = radio("wifi"), radio("sdr"), radio("lora")
    # 12,000 message bits at 8 dB, 16-QAM 1/2: 5 code blocks (5 x 4800 coded bits is 6000 uses, 6 would need 7200)
    # of n coded bits each, n / 2 information bits less a 24-bit CRC each, and a 24-bit CRC over the whole:
    # n = 4860, the least multiple of 4 (one 16-QAM symbol) with 5 x (n / 2 - 24) - 24 >= 12,000
    n = 4 * math.ceil(2 * ((12_000 + 24) / 5 + 24) / 4)
    assert n == 4860 and wifi.link_airtime_s(8.0, 12_000, channel_uses=999) == pytest.approx(5 * n / 4 / 13e6)
    assert sdr.link_airtime_s(8.0, 12_000, channel_uses=999) == pytest.approx(999 / 13e6)
    assert lora.link_airtime_s(8.0, 5469, channel_uses=999) == pytest.approx(1.0)
    assert wifi.link_energy_j(-5.0, 100, 10) == float("inf")


def test_latency_percentiles_are_numpys():
    s = [0.001 * i for i in range(1, 101)]
    lat = Latency.of(s)
    assert (lat.median_ms == pytest.approx(np.median(s) * 1e3)
            and lat.p99_ms == pytest.approx(np.percentile(s, 99) * 1e3))


def test_latency_timing_warms_up_then_times_each_repeat():
    calls = []
    lat = Latency.timing(lambda: calls.append(1), repeats=7, warmup=2)
    assert len(calls) == 9 and lat.samples == 7 and 0 <= lat.median_ms <= lat.p90_ms <= lat.p99_ms


def test_profile_command_reports_energy_with_its_source(tmp_path, photo, capsys):
    from PIL import Image

    from lamsc.cli import main

    img = tmp_path / "coffee.png"
    Image.fromarray(photo).save(img)
    assert main(["profile", "--images", str(img), "--images", "camera", "--repeats", "2", "--radio", "lte",
                 "--energy", "model", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "profile.json").read_text())
    assert [r["image"] for r in result["images"]] == ["coffee", "camera"]  # a file, then a photograph by name
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


def test_profile_sends_the_digital_mode_over_a_digital_radio_and_analog_over_sdr(tmp_path, photo):
    """Over Wi-Fi the profile sends the digital mode's payload, built here again by the one Transmitter: its
    bits, its decoded PSNR and the radio energy of its transport block at Wi-Fi's MCS; over the analog
    preset it sends analog, charged its channel uses."""
    import hashlib

    from lamsc.runtime.profiler import ProfileConfig, profile_link
    from lamsc.semcom import metrics
    from lamsc.semcom.config import DEFAULT_MODEL
    from lamsc.semcom.entropy import DEFAULT_STEP, DigitalMode, load_entropy_model
    from lamsc.semcom.images import NamedImage
    from lamsc.semcom.mcs import TransportBlock, choose_mcs

    image = [NamedImage("coffee", photo)]
    wifi, sdr = (profile_link(ProfileConfig(images=image, energy="model", radio=r, repeats=1, out=tmp_path / r))
                 for r in ("wifi", "sdr"))
    assert wifi.lamsc_link.startswith("digital mode") and sdr.lamsc_link.startswith("analog")
    model, entropy = load_model(), load_entropy_model(DEFAULT_MODEL)
    sent = Transmitter(model, FallbackSegmenter(), digital=DigitalMode(entropy, DEFAULT_STEP)).send(photo)
    got = wifi.images[0]["lamsc"]
    assert got["payload_sha256"] == hashlib.sha256(sent.payload).hexdigest() and got["bits"] == 8 * len(sent.payload)
    decoded = Receiver(model, entropy=entropy).receive(sent.payload, *photo.shape[:2])
    assert got["psnr"] == pytest.approx(float(metrics.psnr(photo, decoded.image)), abs=1e-9)
    wifi_radio = radio("wifi")
    block = TransportBlock.carrying(len(sent.payload), choose_mcs(10.0, wifi_radio.max_bits_per_use))
    assert got["channel_uses"] == block.channel_uses
    assert got["energy"]["radio_j"] == pytest.approx(wifi_radio.link_energy_j(10.0, got["bits"], got["channel_uses"]))
    analog = sdr.images[0]["lamsc"]
    assert analog["energy"]["radio_j"] == pytest.approx(radio("sdr").link_energy_j(10.0, analog["bits"],
                                                                                    analog["channel_uses"]))
    assert analog["payload_sha256"] != got["payload_sha256"]


def test_segment_everything_on_the_exported_skb_graphs_is_the_checkpoints(tiny_sam_checkpoint, tmp_path):
    """A bundle with SAM graphs segments through them with SAM's own mask generator (small-region removal
    included): the same segments as the checkpoint it was exported from."""
    from lamsc.runtime.skb import graph_segmenter
    from lamsc.semcom.sam_checkpoint import load_sam
    from lamsc.semcom.sam_segmenter import SamSegmenter
    from lamsc.semcom.segmenter import MaskGenerationOptions

    sam, arch = load_sam(tiny_sam_checkpoint)
    photos = bundled_photos(["chelsea"])
    b = write_bundle(load_model(), tmp_path / "b", "fp32", sam=SamExport(sam, "tiny"), images=photos)
    assert set(b.graphs) == {"transmitter", "receiver", "skb_encoder", "skb_decoder"}
    # random weights: no mask would pass SAM's default quality filters, so open them
    options = MaskGenerationOptions(points_per_side=4, pred_iou_thresh=-10.0, stability_score_thresh=0.0,
                                    min_mask_region_area=50)
    graphs = graph_segmenter(OnnxRuntimeBackend(b), options).segment(photos[0].pixels)
    checkpoint = SamSegmenter(sam, arch, options=options, device="cpu").segment(photos[0].pixels)
    assert len(graphs.masks) > 0 and graphs.masks.shape == checkpoint.masks.shape
    assert graphs.masks.shape[1:] == photos[0].pixels.shape[:2]
    # fp32 ONNX Runtime against PyTorch: a pixel whose logit sits at the threshold may fall either way
    assert np.mean(graphs.masks != checkpoint.masks) < 1e-3
    np.testing.assert_allclose(graphs.scores, checkpoint.scores, atol=1e-3)


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
            "pycuda.autoprimaryctx": types.ModuleType("pycuda.autoprimaryctx")}, allocations


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
    seg = FallbackSegmenter()
    ends = {name: (Transmitter(b, seg, snr_db=10.0), Receiver(b))
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
    tx, rx = Transmitter(backend, seg, snr_db=10.0), Receiver(backend)
    for _ in range(3):  # the first runs include CUDA's lazy initialisation
        sent = tx.send(photo)
    assert 0 < sent.gpu_seconds["encode"] <= sent.seconds["encode"]
    result = transmit(photo, tx, rx, Channel("awgn", 10.0), seed=0)
    assert rx.gpu_seconds > 0 and result.psnr > 15
