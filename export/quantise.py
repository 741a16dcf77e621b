"""INT8 of the exported graphs: NNCF post-training quantisation, calibrated on real photographs.

ONNX models come out as QDQ graphs, symmetric (``preset=PERFORMANCE``, zero points 0). For TensorRT
(``tensorrt=True``, the default) every quantiser is int8, the form its explicit quantisation consumes.
For ONNX Runtime on x86 CPUs (``tensorrt=False``) NNCF's uint8 quantisers of non-negative activations are
kept: ORT's int8 kernels there take unsigned activations with signed weights (U8S8), the form they run
fastest. ``model_type=TRANSFORMER`` (for ViT encoders) would switch activations to asymmetric unless the
preset is given, so it always is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from lamsc.export.graph_checks import count_qdq, qdq_problems
from lamsc.semcom.asc_levels import sent_levels
from lamsc.semcom.metrics import psnr
from lamsc.semcom.transmission import transmit_power

Metric = Callable[..., float]  # (ONNX Runtime session, feed, reference) -> higher is better


# The codec graphs' own arithmetic between their modules (ASI's integration, the receiver's depth map from the
# levels), exported as top-level nodes (a module's own are named "/encoder/..."): kept in float, as quantising
# a handful of elementwise operations saves nothing and costs their precision.
CODEC_GLUE = (r"^/[^/]+$",)
# GDN and IGDN (x / sqrt(beta + gamma x^2)) stay in float too, as does ASI: the normaliser takes the square of an
# activation (one of the shipped default's reaches 496 on the bundled photographs), a range one int8 scale cannot
# hold beside the small values; ASI is a few small operations whose int8 would save nothing. With either in
# int8 the shipped default's transmitter output has an SQNR near 0 dB.
CODEC_FLOAT = CODEC_GLUE + (r"^/(encoder|decoder)/stages\.\d+/act/.*", r"^/asi/.*")


def quantise_onnx(path: str | Path, out: str | Path, calibration: Iterable[dict], transformer: bool = False,
                  subset_size: int = 300, tensorrt: bool = True, metric: Metric | None = None,
                  validation: Iterable[tuple[dict, np.ndarray]] = (), max_drop: float = 0.5,
                  keep_float: Iterable[str] = ()) -> Path:
    """Quantise the ONNX graph at ``path`` with feeds ``calibration`` (dicts of input name -> array); nodes
    whose names match a ``keep_float`` regular expression stay in float.

    With ``metric`` (an ONNX Runtime session, a feed and its reference -> a figure where higher is better,
    e.g. the PSNR of what the graph reconstructs against the photograph), NNCF's accuracy control keeps
    the layers that cost most in float until the mean metric over ``validation`` (feed, reference) pairs
    is within ``max_drop`` of the float graph's.
    """
    import nncf

    samples = list(calibration)
    common = nncf_settings(samples, transformer, subset_size)
    patterns = list(keep_float)
    if patterns:
        common["ignored_scope"] = nncf.IgnoredScope(patterns=patterns, validate=False)
    model = onnx.load(str(path))
    if metric is None:
        quantised = nncf.quantize(model, nncf.Dataset(samples), **common)
    else:
        checks = list(validation)
        if not checks:
            raise ValueError("accuracy-controlled quantisation needs validation (feed, reference) pairs")
        quantised = nncf.quantize_with_accuracy_control(
            model, nncf.Dataset(samples), nncf.Dataset(checks), _validation(metric, tensorrt), max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE, **common)
    if tensorrt:
        quantised = signed_int8(quantised)
    problems = qdq_problems(quantised) if tensorrt else []
    if problems:  # NNCF changed its defaults: say so rather than ship a graph TensorRT refuses
        raise RuntimeError("NNCF produced Q/DQ nodes TensorRT cannot take: " + "; ".join(problems[:3]))
    if not count_qdq(quantised):
        raise RuntimeError(f"NNCF inserted no quantisers into {path}; nothing in it was quantisable")
    onnx.save(quantised, str(out))
    return Path(out)


def nncf_settings(samples: list, transformer: bool, subset_size: int) -> dict:
    """The PTQ settings every lamsc quantisation shares: symmetric (PERFORMANCE), calibrated on real inputs."""
    import nncf

    logging.getLogger("nncf").setLevel(logging.WARNING)
    if not samples:
        raise ValueError("INT8 calibration needs at least one sample of real inputs")
    return dict(preset=nncf.QuantizationPreset.PERFORMANCE,
                model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                subset_size=min(subset_size, len(samples)))


def _validation(metric: Metric, signed: bool):
    """NNCF's validation function for ONNX: it hands over a ModelProto and the validation pairs. With
    ``signed``, each candidate is scored in the form that ships (``signed_int8``), whose non-negative
    activations have half the resolution of the uint8 ones NNCF made: the drop is held for that form."""
    def validate(model: onnx.ModelProto, pairs) -> tuple[float, list[float]]:
        import onnxruntime as ort
        if signed:
            copied = onnx.ModelProto()
            copied.CopyFrom(model)
            model = signed_int8(copied)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        values = [float(metric(session, feed, reference)) for feed, reference in pairs]
        return float(np.mean(values)), values

    return validate


def codec_link_metric(graph: str, fp32: dict[str, str | Path], num_levels: int) -> Metric:
    """For codec ``graph`` ("transmitter" or "receiver"), the PSNR (dB) of the link's reconstruction against
    the photograph, noise-free, with the other graph in float (``fp32``: graph name -> float ONNX file):
    the figure accuracy-controlled int8 of that graph keeps within its drop.

    The transmitter's output goes through the float receiver as the radio sends it, at unit power
    (``lamsc.semcom.transmission.transmit_power``), and at most at the float transmitter's rate: feature
    levels its quantised depth keeps beyond float's are masked off, so neither more power nor more bits can
    score as accuracy.
    """
    import onnxruntime as ort

    def reconstructed(session, feed, photo):
        image = session.run(["image"], feed)[0]
        return float(psnr(torch.from_numpy(image).clamp(0, 1), torch.from_numpy(photo)).mean())

    if graph == "receiver":
        return reconstructed
    if graph != "transmitter":
        raise ValueError(f"{graph!r} is not a codec graph; the link metric is for the transmitter or the receiver")
    receiver, transmitter = (ort.InferenceSession(str(fp32[g]), providers=["CPUExecutionProvider"])
                             for g in ("receiver", "transmitter"))
    float_levels = {}  # per validation feed, computed once: accuracy control evaluates the same feeds many times

    def levels_of(depth):
        return sent_levels(depth[:, 0], num_levels)

    def transmitted(session, feed, photo):
        key = id(feed["image"])
        if key not in float_levels:  # the array is kept beside its levels, so its id stays its own
            float_levels[key] = (feed["image"], levels_of(transmitter.run(["depth"], feed)[0]))
        features, depth = session.run(["features", "depth"], feed)
        levels = np.minimum(levels_of(depth), float_levels[key][1])
        z = transmit_power(features, levels, num_levels)
        return reconstructed(receiver, {"z": z, "levels": levels, "snr_db": feed["snr_db"]}, photo)

    return transmitted


def signed_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite NNCF's unsigned activation quantisers (uint8, zero point 0, for non-negative inputs such as
    images and masks) as signed int8 ones covering the same range: TensorRT takes int8 Q/DQ only.

    The grid {0, s, ..., 255 s} becomes {-128 s', ..., 127 s'} with s' = 255 s / 127: the same top of the
    range at half the resolution, which is what an int8 tensor of a non-negative signal can do. (NNCF's
    ``signedness_to_force`` would do this at calibration, but its CPU/GPU hardware configs refuse it.)
    """
    init = {t.name: t for t in model.graph.initializer}
    done, outputs = set(), set()
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(node.input) < 3:
            continue
        zp = init.get(node.input[2])
        if zp is None or numpy_helper.to_array(zp).dtype != np.uint8:
            continue
        if node.op_type == "QuantizeLinear":
            outputs.add(node.output[0])
        for name in node.input[1:3]:  # scale and zero point, each rewritten once even where shared
            if name in done:
                continue
            value = numpy_helper.to_array(init[name])
            if name == node.input[2]:
                if value.any():
                    raise RuntimeError(f"{node.name} is asymmetric uint8; quantise with preset=PERFORMANCE")
                value = value.astype(np.int8)
            else:
                value = (value * (255.0 / 127.0)).astype(value.dtype)
            init[name].CopyFrom(numpy_helper.from_array(value, name))
            done.add(name)
    for info in model.graph.value_info:  # the quantised tensors' recorded types
        if info.name in outputs:
            info.type.tensor_type.elem_type = onnx.TensorProto.INT8
    return model
