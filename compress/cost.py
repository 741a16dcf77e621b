"""What a model costs per image on a target: measured where the target is at hand, else the cost model.

Targets:
- ``cpu``: this machine's CPU, measured with ONNX Runtime on the exported graphs (the deployed runtime);
- ``gpu``: ONNX Runtime's CUDA provider, measured, when a GPU is present;
- a named device profile (lamsc.runtime.devices: orin-nano, orin-nano-super, orin-nx, agx-orin, xavier-nx):
  estimated.

On the Jetson profiles the cost model is lamsc.compress.calibration's, fitted on published TensorRT
latencies; every estimate carries its leave-one-out error on them. On the "cpu" profile it is a roofline,
time = max(2 x MACs / (peak x EFFICIENCY), weight bytes / bandwidth), with EFFICIENCY a stated assumption:
``lamsc compress --target cpu`` evaluates it beside the measurement, so its error is printed every run.
Energy = time x the module's active power. MACs count every multiply-accumulate PyTorch dispatches
(torch.utils.flop_counter), attention included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from lamsc.compress.budget import Cost
from lamsc.compress.calibration import BYTES, CALIBRATION, Work, predict_ms
from lamsc.errors import UserError
from lamsc.export.sessions import session, usable_cores
from lamsc.runtime.devices import DEVICES, device_profile
from lamsc.runtime.energy import energy_meter

MEASURED_TARGETS = ("cpu", "gpu")
EFFICIENCY = 0.3  # of datasheet peak: typical of TensorRT/ORT on convolutional and ViT encoders


@dataclass(frozen=True)
class Target:
    name: str

    def __post_init__(self):
        if self.name not in MEASURED_TARGETS and self.name not in DEVICES:
            raise UserError(f"unknown target {self.name!r}; choose cpu, gpu or one of "
                            f"{', '.join(d for d in DEVICES if d != 'cpu')}")
        if self.name == "gpu":
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise UserError("--target gpu needs ONNX Runtime's CUDA provider and a GPU, neither found here; "
                                "use --target cpu or a device profile such as orin-nano")

    @property
    def measured(self) -> bool:
        return self.name in MEASURED_TARGETS

    def profile_name(self) -> str:
        """The device profile whose power (and, for the cost model, rates) describes this target."""
        return "cpu" if self.name in MEASURED_TARGETS else self.name

    def providers(self) -> list[str]:
        return ["CUDAExecutionProvider"] if self.name == "gpu" else ["CPUExecutionProvider"]


def count_work(module: torch.nn.Module, inputs: tuple) -> Work:
    """What one forward pass does: multiply-accumulates of convolutions and of matrix products (FLOPs / 2, as
    torch's flop counter counts 2 per MAC), the conv/linear layers run and the activation elements they read
    and write. Fused attention (``scaled_dot_product_attention``) runs on its math kernel while counting: the
    fused CPU kernels are invisible to the counter, the math one is two batched matrix products."""
    seen = {"layers": 0, "activations": 0}

    def hook(_, args, out):
        seen["layers"] += 1
        seen["activations"] += args[0].numel() + out.numel()

    layers = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    flops = {"conv": 0, "matmul": 0}
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        flops["conv" if "convolution" in str(op) else "matmul"] += n
    return Work(flops["conv"] // 2, flops["matmul"] // 2, seen["layers"], seen["activations"])


def count_macs(module: torch.nn.Module, inputs: tuple) -> int:
    """Multiply-accumulates of one forward pass."""
    return count_work(module, inputs).macs


def measure_onnx(models: list[tuple[list[Path], list[dict[str, np.ndarray]]]], target: Target,
                 repeats: int = 7, warmup: int = 2) -> list[tuple[float, float, str]]:
    """Median latency (ms) and energy (mJ) per image of each model, and the energy source.

    A model is its graph files, run in turn on their feeds. The models are timed round-robin, one energy window
    each per round, so that whatever else loads the machine meanwhile weighs on all of them alike and their
    ratios hold even when the absolute figures drift. A window runs the model as often as the meter needs to
    resolve it (``min_window_s``: NVML and the Jetson rails update every 20-100 ms) and counts per run.
    """
    runs = [[(session(f, target.providers()), feed) for f, feed in zip(files, feeds)] for files, feeds in models]
    meter = energy_meter("auto", target.profile_name(), usable_cores(),
                         work_on="gpu" if target.name == "gpu" else "cpu")
    seconds = [[] for _ in runs]
    joules = [[] for _ in runs]
    for round_ in range(warmup + repeats):
        for i, graphs in enumerate(runs):
            count = 0
            with meter.measure() as window:
                t0 = time.perf_counter()
                while count == 0 or time.perf_counter() - t0 < meter.min_window_s:
                    for s, feed in graphs:
                        s.run(None, feed)
                    count += 1
                elapsed = time.perf_counter() - t0
            if round_ >= warmup:
                seconds[i].append(elapsed / count)
                joules[i].append(window.reading.joules / count)
    return [(float(np.median(s) * 1e3), float(np.median(j) * 1e3), meter.source) for s, j in zip(seconds, joules)]


def estimate(work: Work, params: int, precision: str, profile: str, cores: int = 1) -> tuple[float, float]:
    """Cost-model latency (ms) and energy (mJ) of one image on a named device profile."""
    p = device_profile(profile)
    if profile != "cpu":
        ms = predict_ms(CALIBRATION.values, work, params, precision, profile)
        return ms, ms * p.active_w
    compute_s = 2 * work.macs / (p.peak_tflops(precision) * 1e12 * cores * EFFICIENCY)  # the profile is one core
    memory_s = params * BYTES[precision] / (p.memory_gbps * 1e9)
    seconds = max(compute_s, memory_s)
    return seconds * 1e3, seconds * p.active_w * cores * 1e3


def cost_of(files: list[Path], work: Work, params: int, precision: str, target: Target,
            measured: tuple[float, float, str] | None = None) -> tuple[Cost, dict]:
    """The candidate's cost on ``target`` (``measured`` from ``measure_onnx`` on measured targets) and, for
    those, the cost model's estimate beside the measurement."""
    size = sum(Path(f).stat().st_size for f in files)
    est_ms, est_mj = estimate(work, params, precision, target.profile_name(), usable_cores())
    if not target.measured:
        return Cost(est_ms, est_mj, params, size, work.macs,
                    f"cost model ({target.name}, estimate; {CALIBRATION.describe()})"), {}
    ms, mj, source = measured
    check = {"estimated_ms": round(est_ms, 3), "measured_ms": round(ms, 3), "error": round(est_ms / ms - 1, 4)}
    return Cost(ms, mj, params, size, work.macs, f"measured on {target.name} (ONNX Runtime); energy: {source}"), check
