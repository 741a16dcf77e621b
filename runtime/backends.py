"""The exported bundle's backends, ONNX Runtime and TensorRT, behind lamsc.semcom.backend's interface
(whose reference is the PyTorch backend), and ``open_backend`` to choose one by name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lamsc.errors import UserError
from lamsc.export.manifest import Bundle
from lamsc.export.sessions import intra_op_threads, session
from lamsc.export.tensorrt import tensorrt
from lamsc.semcom.backend import Backend
from lamsc.semcom.graph_specs import GraphSpec

if TYPE_CHECKING:  # the PyTorch backend needs torch; a bundle's backends do not
    import torch

    from lamsc.semcom.model import LamscModel

BACKENDS = ("torch", "onnxruntime", "tensorrt")


class OnnxRuntimeBackend:
    """The bundle's ONNX graphs in ONNX Runtime (CUDA execution provider when present)."""

    def __init__(self, bundle: Bundle, providers: list[str] | None = None, threads: int | None = None):
        self.bundle = bundle
        self.sessions = {g: session(bundle.path(g), providers, threads) for g in bundle.graphs}
        self.graphs = bundle.graphs
        self.config = bundle.config
        self.gpu_seconds = None
        provider = next(iter(self.sessions.values())).get_providers()[0]
        self.name = f"onnxruntime ({provider}, {bundle.precision})"
        self.processor = "cpu" if provider == "CPUExecutionProvider" else "gpu"
        self.threads = intra_op_threads(threads) if self.processor == "cpu" else 1

    def spec(self, graph: str) -> GraphSpec:
        return self.bundle.spec(graph)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.bundle.root})"

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        s = self.sessions[graph]
        names = [o.name for o in s.get_outputs()]
        wanted = {i.name for i in s.get_inputs()}
        return dict(zip(names, s.run(None, {k: v for k, v in feeds.items() if k in wanted})))

    def synchronize(self) -> None:
        pass  # InferenceSession.run returns when its outputs are on the host


class TensorRTBackend:
    """The bundle's engines (built on this device into BUNDLE/engines/), through TensorRT 10's
    name-based I/O API, with pycuda device buffers. Imported lazily: TensorRT lives on the Jetson."""

    def __init__(self, bundle: Bundle):
        trt = tensorrt()
        try:
            import pycuda.autoprimaryctx  # noqa: F401  (the device's primary context, which torch shares)
            import pycuda.driver as cuda
        except ImportError:
            raise UserError("the TensorRT backend needs pycuda: pip install 'lamsc[gpu]'") from None
        self.trt, self.cuda, self.bundle = trt, cuda, bundle
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines, self.contexts = {}, {}
        for g in bundle.graphs:
            path = bundle.root / "engines" / f"{g}.engine"
            if not path.is_file():
                raise UserError(f"{path} not found: build the engines on this device first (sh build_engines.sh)")
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            self.engines[g], self.contexts[g] = engine, engine.create_execution_context()
        self.stream = cuda.Stream()
        self.buffers = {}
        self.events = cuda.Event(), cuda.Event()
        self.gpu_seconds = None
        self.graphs = bundle.graphs
        self.config = bundle.config
        self.name = f"tensorrt {trt.__version__} ({bundle.precision})"
        self.processor = "gpu"
        self.threads = 1

    def spec(self, graph: str) -> GraphSpec:
        return self.bundle.spec(graph)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}: {self.bundle.root})"

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        trt, cuda = self.trt, self.cuda
        engine, ctx = self.engines[graph], self.contexts[graph]
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        start, end = self.events
        start.record(self.stream)
        hosts = []  # host copies live until the stream is done with them
        for n in inputs:
            host = np.ascontiguousarray(feeds[n], dtype=trt.nptype(engine.get_tensor_dtype(n)))
            ctx.set_input_shape(n, host.shape)
            dev = self._device_buffer(graph, n, host.nbytes)
            cuda.memcpy_htod_async(dev, host, self.stream)
            ctx.set_tensor_address(n, int(dev))
            hosts.append(host)
        outputs = {}
        for n in names:
            if n in inputs:
                continue
            host = np.empty(tuple(ctx.get_tensor_shape(n)), dtype=trt.nptype(engine.get_tensor_dtype(n)))
            dev = self._device_buffer(graph, n, host.nbytes)
            ctx.set_tensor_address(n, int(dev))
            outputs[n] = (host, dev)
        if not ctx.execute_async_v3(self.stream.handle):
            raise RuntimeError(f"TensorRT failed to run {graph}")
        for host, dev in outputs.values():
            cuda.memcpy_dtoh_async(host, dev, self.stream)
        end.record(self.stream)
        self.stream.synchronize()
        self.gpu_seconds = end.time_since(start) / 1e3
        return {n: host.astype(np.float32) if host.dtype == np.float16 else host for n, (host, _) in outputs.items()}

    def _device_buffer(self, graph: str, tensor: str, nbytes: int):
        """A device buffer of at least ``nbytes`` for this tensor, kept between runs: allocating on every
        run would put cudaMalloc inside the latencies the profiler times."""
        dev, size = self.buffers.get((graph, tensor), (None, -1))
        if size < nbytes:
            dev = self.cuda.mem_alloc(max(nbytes, 1))
            self.buffers[(graph, tensor)] = (dev, nbytes)
        return dev

    def synchronize(self) -> None:
        self.stream.synchronize()


def open_backend(name: str, bundle: Bundle | None = None, model: LamscModel | None = None,
                 sam: torch.nn.Module | None = None, device: str = "auto") -> Backend:
    """A backend by name over a bundle (onnxruntime, tensorrt) or a PyTorch model (torch)."""
    if name not in BACKENDS:
        runs = [b for b in BACKENDS if (b == "torch") == (bundle is None)]  # those that run what was given
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(runs)}")
    if name == "torch":
        if model is None:
            raise UserError("the torch backend runs a checkpoint, not a bundle: pass a model file, or choose "
                            "--backend onnxruntime|tensorrt for a bundle")
        from lamsc.semcom.torch_backend import TorchBackend

        return TorchBackend(model, sam, device)
    if bundle is None:
        raise UserError(f"the {name} backend runs an exported bundle: make one with `lamsc export`")
    if name == "onnxruntime":
        return OnnxRuntimeBackend(bundle)
    return TensorRTBackend(bundle)


def is_bundle(path: str | Path | None) -> bool:
    return path is not None and (Path(path) / "manifest.json").is_file()
