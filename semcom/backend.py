"""The interface the Transmitter and Receiver run their networks through; its reference is the PyTorch
backend (lamsc.semcom.torch_backend).

``backend.run(graph, feeds) -> outputs`` with graphs and tensors named as in lamsc.semcom.graphs; feeds are
arrays (NumPy, or torch tensors for the PyTorch backend, which takes them without a copy on their device)
and outputs NumPy arrays, so the endpoints do not know which backend runs them. ONNX Runtime and TensorRT
implement the same interface over an exported bundle (lamsc.runtime.backends).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lamsc.semcom.config import ModelConfig
from lamsc.semcom.graph_specs import GraphSpec


class Backend(Protocol):
    name: str          # "torch (cuda)", "onnxruntime (CPUExecutionProvider, fp32)", ...
    graphs: list[str]
    config: ModelConfig  # the codec's configuration (levels, channels, SNR range the FiLM layers saw)
    processor: str     # where the graphs run: "cpu" or "gpu" (what an energy meter must see)
    threads: int       # host threads the graphs keep busy (what the declared-power meter counts)
    # The last run's time on the GPU by CUDA events on its stream (inputs in, graph, outputs out), free of
    # host timer and synchronisation overhead; None off a GPU, and for ONNX Runtime, which owns its stream.
    gpu_seconds: float | None

    def run(self, graph: str, feeds: dict) -> dict[str, np.ndarray]: ...

    def spec(self, graph: str) -> GraphSpec: ...

    def synchronize(self) -> None: ...
