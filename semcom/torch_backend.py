"""The PyTorch backend: the modules the graphs are exported from, run eagerly; the reference every other
backend (lamsc.runtime.backends) is checked against."""

from __future__ import annotations

import copy

import numpy as np
import torch

from lamsc.semcom.graph_specs import GraphSpec
from lamsc.semcom.graphs import model_graphs, skb_graphs
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import torch_device


class TorchBackend:
    """The PyTorch modules the graphs are exported from, eager, on ``device`` ("auto": CUDA when present).
    Its feeds may be torch tensors already on the device (``takes_tensors``): the CUDA unpack's output is
    decoded where it lies.

    The codec's graphs run on a channels-last copy of the model (the caller's model is left as it is; a SAM
    is moved to ``device`` as it is): oneDNN and cuDNN convolve NHWC without reordering every layer's input.
    Outputs come back C-contiguous.
    """

    takes_tensors = True

    def __init__(self, model: LamscModel, sam: torch.nn.Module | None = None, device: str | torch.device = "auto"):
        self.device = torch_device(str(device))
        model = copy.deepcopy(model).to(self.device, memory_format=torch.channels_last)
        self.modules = model_graphs(model)
        self.nhwc = set(self.modules)  # the codec's graphs; SAM's stay as its checkpoint runs them
        if sam is not None:
            self.modules.update(skb_graphs(sam.to(self.device)))
        self.specs = {k: m.spec() for k, m in self.modules.items()}
        self.graphs = list(self.modules)
        self.config = model.config
        self.name = f"torch ({self.device.type})"
        self.processor = "gpu" if self.device.type == "cuda" else "cpu"
        self.threads = torch.get_num_threads() if self.processor == "cpu" else 1
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
        if graph in self.nhwc:
            args = [_channels_last(a) for a in args]
        out = self.modules[graph](*args)
        out = out if isinstance(out, tuple) else (out,)
        outputs = {t.name: o.float().contiguous().cpu().numpy() for t, o in zip(spec.outputs, out)}
        if on_gpu:
            end.record()
            end.synchronize()
            self.gpu_seconds = start.elapsed_time(end) / 1e3
        return outputs

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """An image-like (4-D, floating) tensor in NHWC order; anything else as it is."""
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 and t.is_floating_point() else t
