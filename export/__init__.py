"""lamsc.export: the model to ONNX, verified against PyTorch, in a deploy bundle a Jetson runs.

bundle.py        write_bundle(model, out, precision) -> Bundle: the graphs, verification, manifest; load_bundle
onnx_export.py   torch.onnx export (opset 17), fp16 conversion, output comparison against PyTorch
quantise.py      int8 of the exported graphs with NNCF (Q/DQ for TensorRT or ONNX Runtime, accuracy control)
samples.py       real inputs for each graph, from photographs: what verification and calibration run on
graph_checks.py  what TensorRT 10 cannot build (shape tensors from OneHot, asymmetric Q/DQ)
tensorrt.py      the trtexec command and shape profiles, the engine build through TensorRT's Python API
engines.py       python -m lamsc.export.engines BUNDLE: every engine of a bundle, on the device
device_steps.py  build_engines.sh and JETSON.md beside the graphs

The graphs themselves are the model's (lamsc.semcom.graphs); the ASC pack runs after them.
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "Bundle": "manifest", "BundleError": "manifest", "load_bundle": "manifest", "Int8Options": "bundle",
    "SamExport": "bundle", "write_bundle": "bundle",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
