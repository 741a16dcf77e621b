"""Export a graph to ONNX, check it, and compare ONNX Runtime with PyTorch on given inputs.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: it writes plain opset-17 graphs
with symbolic H/W that TensorRT 8.6-10 parse, exports in a second, and needs no onnxscript. The dynamo
exporter bakes some shapes of this model into constants (seen with torch 2.15).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from lamsc.export.sessions import session
from lamsc.semcom.graph_specs import GraphSpec

OPSET = 17

# How far ORT may be from PyTorch, per precision. float32: the largest |ORT - PyTorch| relative to the
# output's range (only summation order differs). float16 and int8: the SQNR of every output, because
# the ASC mask is a threshold: where the depth sits at a level boundary, a rounding flips whether a
# feature is sent, so single values differ by their full size while the output as a whole is close.
# What a precision costs the link is then measured end to end (PSNR) by `lamsc profile`.
MAX_RELATIVE = {"fp32": 1e-4}
MIN_SQNR_DB = {"fp16": 25.0, "int8": 8.0}


def export_onnx(module: nn.Module, spec: GraphSpec, example: tuple, path: str | Path, opset: int = OPSET) -> Path:
    """Export ``module`` called on ``example`` to ``path`` with the spec's names and dynamic axes; check it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints; the dynamic axes are declared
        torch.onnx.export(module.eval(), example, str(path), input_names=[t.name for t in spec.inputs],
                          output_names=[t.name for t in spec.outputs], dynamic_axes=spec.dynamic_axes(),
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(str(path), full_check=True)
    return path


@dataclass
class Comparison:
    graph: str
    output: str
    max_abs: float
    range: float            # max |PyTorch output|: the scale the error is judged against
    sqnr_db: float          # signal-to-quantisation-noise ratio of ORT's output against PyTorch's

    @property
    def relative(self) -> float:
        return self.max_abs / max(self.range, 1e-12)

    def to_dict(self) -> dict:
        return {"graph": self.graph, "output": self.output, "max_abs": self.max_abs, "range": self.range,
                "relative": self.relative, "sqnr_db": self.sqnr_db}


def compare(module: nn.Module, spec: GraphSpec, path: str | Path, inputs: tuple) -> list[Comparison]:
    """Run PyTorch and ONNX Runtime on the same inputs; one Comparison per output."""
    return compare_outputs(spec, *run_both(module, spec, path, inputs))


def run_both(module: nn.Module, spec: GraphSpec, path: str | Path, inputs: tuple) -> tuple[list, list]:
    """PyTorch's and ONNX Runtime's outputs on the same inputs, both as float64 arrays in ``spec``'s order."""
    with torch.no_grad():
        ref = module.eval()(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
    stat = Path(path).stat()
    got = _cpu_session(str(path), stat.st_mtime_ns, stat.st_size).run(None, feeds)
    return [r.double().numpy() for r in ref], [np.asarray(g, np.float64) for g in got]


def compare_outputs(spec: GraphSpec, ref: list, got: list) -> list[Comparison]:
    out = []
    for t, r, g in zip(spec.outputs, ref, got):
        noise = float(np.mean((r - g) ** 2))
        sqnr = 10 * np.log10(float(np.mean(r**2)) / noise) if noise > 0 else float("inf")
        out.append(Comparison(spec.name, t.name, float(np.abs(r - g).max()), float(np.abs(r).max()), sqnr))
    return out


@functools.lru_cache(maxsize=8)
def _cpu_session(path: str, mtime_ns: int, size: int):
    """One CPU session per file version (verification runs many samples through the same graph)."""
    return session(path, ["CPUExecutionProvider"])


def to_fp16(path: str | Path, out: str | Path) -> Path:
    """Weights and activations in float16, inputs and outputs left float32 (so callers feed the same arrays)."""
    from onnxruntime.transformers import float16  # handles Cast nodes, unlike onnxconverter-common's

    from onnxruntime.transformers.onnx_model import OnnxModel

    # Sums over whole feature maps (power normalisation, ASI integration) overflow float16's 65504: keep
    # reductions and what feeds them in float32, as TensorRT's own mixed precision would.
    model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True,
                                             op_block_list=["ReduceSum", "ReduceMean", "Pow", "Sqrt"])
    OnnxModel(model).topological_sort()  # the converter appends its input casts at the end
    onnx.save(model, str(out))
    onnx.checker.check_model(str(out), full_check=True)
    return Path(out)
