"""lamsc.export: ONNX export and verification, TensorRT engine build, the deploy bundle.

This stage is being built (issue: ONNX and TensorRT export); it exports nothing yet.
"""

__all__: list[str] = []
