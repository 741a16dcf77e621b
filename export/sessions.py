"""ONNX Runtime sessions over exported graphs, as the runtime, the export checks and the cost model open
them (torch-free: a deployment opens its bundle with this)."""

from __future__ import annotations

import os
from pathlib import Path

import onnx


def session(path: str | Path, providers: list[str] | None = None, threads: int | None = None):
    """An ONNX Runtime session on the best provider available (CUDA when present, else CPU).

    ``threads``: intra-op threads; None is ONNX Runtime's own choice (one per physical core), or
    ``usable_cores()`` when this process may run on fewer cores than the machine has.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    usable = usable_cores()
    # ONNX Runtime counts the machine's cores, not the process's affinity: threads beyond it share cores and spin
    threads = threads or (usable if usable < (os.cpu_count() or usable) else None)
    if threads:
        options.intra_op_num_threads = threads
    available = ort.get_available_providers()
    chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), options, providers=chosen, disabled_optimizers=_disabled_for(path))


def usable_cores() -> int:
    """How many cores this process may run on: its CPU affinity (taskset, a cgroup cpuset, a test worker's
    share), where the system reports one, else every core of the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on macOS or Windows
        return os.cpu_count() or 1


def _disabled_for(path: str | Path) -> list[str]:
    """ORT's MatMulAddFusion rewrites a 3-D DQ -> MatMul -> Add (every Linear of a transformer) into
    Reshape -> DQ -> Gemm before its QDQ fusions run, and a DQ -> Gemm it then leaves in float: an int8
    TinyViT ran its MLPs as float Gemms on dequantised inputs. Without that fusion they run as
    MatMulIntegerToFloat (benchmarks/int8_transformer_ort.py measures the difference)."""
    model = onnx.load(str(path), load_external_data=False)
    return ["MatMulAddFusion"] if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else []
