"""The interface the Transmitter and Receiver run their networks through, and its reference: PyTorch.

``backend.run(graph, feeds) -> outputs`` with graphs and tensors named as in lamsc.semcom.graphs; feeds are
arrays (NumPy, or torch tensors for the PyTorch backend, which takes them without a copy on their device)
and outputs NumPy arrays, so the endpoints do not know which backend runs them. ONNX Runtime and TensorRT
implement the same interface over an exported bundle (lamsc.runtime.backends).
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch

from lamsc.semcom.graphs import GraphSpec, model_graphs, skb_graphs
from lamsc.semcom.model import LamscModel, ModelConfig
from lamsc.semcom.segmenter import torch_device


class Backend(Protocol):
    name: str          # "torch (cuda)", "onnxruntime (CPUExecutionProvider, fp32)", ...
    graphs: list[str]
    config: ModelConfig  # the codec's configuration (levels, channels, SNR range the FiLM layers saw)
    processor: str     # where the graphs run: "cpu" or "gpu" (what an energy meter must see)
    # The last run's time on the GPU by CUDA events on its stream (inputs in, graph, outputs out), free of
    # host timer and synchronisation overhead; None off a GPU, and for ONNX Runtime, which owns its stream.
    gpu_seconds: float | None

    def run(self, graph: str, feeds: dict) -> dict[str, np.ndarray]: ...

    def spec(self, graph: str) -> GraphSpec: ...

    def synchronize(self) -> None: ...


class TorchBackend:
    """The PyTorch modules the graphs are exported from, eager, on ``device`` ("auto": CUDA when present)."""

    def __init__(self, model: LamscModel, sam: torch.nn.Module | None = None, device: str | torch.device = "auto"):
        self.device = torch_device(str(device))
        if next(model.parameters()).device != self.device:  # a copy: the caller's model may serve another end
            model = copy.deepcopy(model).to(self.device)
        self.modules = model_graphs(model)
        if sam is not None:
            self.modules.update(skb_graphs(sam.to(self.device)))
        self.specs = {k: m.spec() for k, m in self.modules.items()}
        self.graphs = list(self.modules)
        self.config = model.config
        self.name = f"torch ({self.device.type})"
        self.processor = "gpu" if self.device.type == "cuda" else "cpu"
        self.gpu_seconds = None

    def spec(self, graph: str) -> GraphSpec:
        return self.specs[graph]

    def __repr__(self) -> str:
        return f"TorchBackend({self.name}: {', '.join(self.graphs)})"

    @torch.inference_mode()
    def run(self, graph: str, feeds: dict) -> dict[str, np.ndarray]:
        spec = self.specs[graph]
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        args = [torch.as_tensor(np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v).to(self.device)
                for v in (feeds[t.name] for t in spec.inputs)]
        out = self.modules[graph](*args)
        out = out if isinstance(out, tuple) else (out,)
        outputs = {t.name: o.float().cpu().numpy() for t, o in zip(spec.outputs, out)}
        if on_gpu:
            end.record()
            end.synchronize()
            self.gpu_seconds = start.elapsed_time(end) / 1e3
        return outputs

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
