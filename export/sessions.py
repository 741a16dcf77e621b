"""ONNX Runtime sessions over exported graphs, as the runtime, the export checks and the cost model open
them (torch-free: a deployment opens its bundle with this)."""

from __future__ import annotations

from pathlib import Path

import onnx


def session(path: str | Path, providers: list[str] | None = None, threads: int | None = None):
    """An ONNX Runtime session on the best provider available (CUDA when present, else CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    available = ort.get_available_providers()
    chosen = providers or [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), options, providers=chosen, disabled_optimizers=_disabled_for(path))


def _disabled_for(path: str | Path) -> list[str]:
    """ORT's MatMulAddFusion rewrites a 3-D DQ -> MatMul -> Add (every Linear of a transformer) into
    Reshape -> DQ -> Gemm before its QDQ fusions run, and a DQ -> Gemm it then leaves in float: an int8
    TinyViT ran its MLPs as float Gemms on dequantised inputs. Without that fusion they run as
    MatMulIntegerToFloat (benchmarks/int8_transformer_ort.py measures the difference)."""
    model = onnx.load(str(path), load_external_data=False)
    return ["MatMulAddFusion"] if any(n.op_type == "QuantizeLinear" for n in model.graph.node) else []
