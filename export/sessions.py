"""ONNX Runtime sessions over exported graphs, as the runtime, the export checks and the cost model open
them (torch-free: a deployment opens its bundle with this)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx


def session(path: str | Path, providers: list[str] | None = None, threads: int | None = None):
    """An ONNX Runtime session on the best provider available (CUDA when present, else CPU).

    ``threads``: intra-op threads; None is ``intra_op_threads()``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads(threads)
    available = ort.get_available_providers()
    chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), options, providers=chosen, disabled_optimizers=_disabled_for(path))


def intra_op_threads(threads: int | None = None) -> int:
    """The intra-op threads a CPU session runs: ``threads`` when given, else one per physical core among the
    cores this process may run on. That is ONNX Runtime's own default, except that ONNX Runtime counts the
    machine's cores, not the process's affinity: under taskset or a cpuset its extra threads share cores and
    spin. Physical cores are read from sysfs (SMT siblings count once); without it, every usable core counts."""
    if threads:
        return threads
    cores = _affinity()
    physical = set()
    for core in cores:
        topology = Path(f"/sys/devices/system/cpu/cpu{core}/topology")
        try:
            physical.add(((topology / "physical_package_id").read_text(), (topology / "core_id").read_text()))
        except OSError:
            return len(cores)
    return len(physical)


def usable_cores() -> int:
    """How many cores this process may run on: its CPU affinity (taskset, a cgroup cpuset, a test worker's
    share), where the system reports one, else every core of the machine."""
    return len(_affinity())


def _affinity() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # no affinity call on macOS or Windows
        return set(range(os.cpu_count() or 1))


def _disabled_for(path: str | Path) -> list[str]:
    """ORT's MatMulAddFusion rewrites a 3-D DQ -> MatMul -> Add (every Linear of a transformer) into
    Reshape -> DQ -> Gemm before its QDQ fusions run, and a DQ -> Gemm it then leaves in float: an int8
    TinyViT ran its MLPs as float Gemms on dequantised inputs. Without that fusion they run as
    MatMulIntegerToFloat (benchmarks/int8_transformer_ort.py measures the difference)."""
    model = onnx.load(str(path), load_external_data=False)
    return ["MatMulAddFusion"] if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else []
