"""What TensorRT needs of an ONNX graph, checked here where TensorRT itself is not available.

Each check returns the problems it found as sentences (empty = fine), so a bundle can refuse a graph with
the reason and tests can assert the absence of a pattern.
"""

from __future__ import annotations

import onnx
from onnx import numpy_helper

MIN_OPSET = 17


def opset_problems(model: onnx.ModelProto) -> list[str]:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return [] if opset >= MIN_OPSET else [f"opset {opset} is below {MIN_OPSET}; "
                                          f"export again with opset_version={MIN_OPSET}"]


def onehot_shape_problems(model: onnx.ModelProto) -> list[str]:
    """Tile or Expand nodes whose repeats/shape depend on a OneHot: TensorRT 8.6-10.3 reject them with
    "IIOneHotLayer cannot be used to compute a shape tensor" (what ``repeat_interleave`` exports to)."""
    producer = {out: node for node in model.graph.node for out in node.output}

    def from_onehot(name: str, seen: set) -> bool:
        node = producer.get(name)
        if node is None or name in seen:
            return False
        seen.add(name)
        return node.op_type == "OneHot" or any(from_onehot(i, seen) for i in node.input if i)

    return [f"{n.op_type} node {n.name!r} takes its shape from a OneHot; TensorRT cannot build it"
            for n in model.graph.node if n.op_type in ("Tile", "Expand") and len(n.input) > 1
            and from_onehot(n.input[1], set())]


def qdq_problems(model: onnx.ModelProto) -> list[str]:
    """TensorRT's explicit quantisation takes symmetric int8 Q/DQ only: zero points must be 0 (or absent)."""
    init = {t.name: t for t in model.graph.initializer}
    constants = {n.output[0]: next(a.t for a in n.attribute if a.name == "value")
                 for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    problems = []
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3 or not n.input[2]:
            continue
        tensor = init.get(n.input[2]) or constants.get(n.input[2])
        if tensor is None:
            problems.append(f"{n.op_type} {n.name!r} has a computed zero point; TensorRT needs constant zeros")
            continue
        zp = numpy_helper.to_array(tensor)
        if zp.dtype.name != "int8":
            problems.append(f"{n.op_type} {n.name!r} quantises to {zp.dtype.name}; TensorRT needs int8")
        if zp.any():
            problems.append(f"{n.op_type} {n.name!r} is asymmetric (zero point {zp.ravel()[:4].tolist()}); "
                            "quantise with preset=PERFORMANCE")
    return problems


def count_qdq(model: onnx.ModelProto) -> int:
    return sum(n.op_type == "QuantizeLinear" for n in model.graph.node)


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """Everything above, for one graph."""
    return opset_problems(model) + onehot_shape_problems(model) + qdq_problems(model)
