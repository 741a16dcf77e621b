"""TensorRT engines from a bundle's ONNX graphs, built on the device that will run them.

Written to TensorRT's documented Python API (10.x as JetPack 6 ships it; 11.x where it differs) and
imported lazily: TensorRT cannot be installed where this toolkit is developed, so this file is kept thin
and everything it consumes (the ONNX graphs, their Q/DQ form, the shape profiles, the trtexec command
line) is built and tested elsewhere.

- 10.x: precision by builder flags (FP16; INT8 for explicitly quantised Q/DQ graphs, with FP16 for the
  layers left in float).
- 11.x removes BuilderFlag.FP16/INT8: networks are strongly typed and take their precision from the
  ONNX itself, which is why a bundle ships fp16 and int8 ONNX files rather than relying on flags.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from lamsc.errors import UserError
from lamsc.semcom.graph_specs import GraphSpec
# Dynamic axes: (min, opt, max). Heights/widths up to 1080p (padded to 1088), optimised for 512x512.
AXIS_RANGES = {"batch": (1, 1, 4), "height": (64, 512, 1088), "width": (64, 512, 1920),
               "feature_height": (8, 64, 136), "feature_width": (8, 64, 240),
               "prompts": (1, 64, 256), "points": (1, 1, 4)}

# Every option trtexec_command may pass, each documented for TensorRT 10's trtexec: in `trtexec --help` of
# TensorRT 10.3 (JetPack 6's), whose text is samples/common/sampleOptions.cpp on branch release/10.3 of
# https://github.com/NVIDIA/TensorRT (the same from 10.0 to 10.16), and on the reference page
# https://docs.nvidia.com/deeplearning/tensorrt/latest/reference/command-line-programs.html
TRTEXEC_OPTIONS = frozenset({"--onnx", "--saveEngine", "--memPoolSize", "--timingCacheFile", "--minShapes",
                             "--optShapes", "--maxShapes", "--fp16", "--int8", "--skipInference"})


def shape_profile(spec: GraphSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Per input, its (min, opt, max) shapes for a TensorRT optimisation profile."""
    out = {}
    for t in spec.inputs:
        dims = [AXIS_RANGES[a] if isinstance(a, str) else (a, a, a) for a in t.shape]
        out[t.name] = tuple(tuple(d[i] for d in dims) for i in range(3))
    return out


def trtexec_command(onnx_file: str, engine_file: str, spec: GraphSpec, precision: str,
                    workspace_mib: int = 1024, timing_cache: str = "timing.cache") -> str:
    """The ``trtexec`` command line that builds the same engine as ``build_engine`` (TensorRT 10), and only
    builds it: no timing run follows."""
    args = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}",
            f"--memPoolSize=workspace:{workspace_mib}M", f"--timingCacheFile={timing_cache}", "--skipInference"]
    profile = shape_profile(spec)
    if any(lo != hi for lo, _, hi in profile.values()):
        for flag, i in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            args.append(flag + "=" + ",".join(f"{n}:{'x'.join(map(str, s[i]))}" for n, s in profile.items()))
    if precision == "fp16":
        args.append("--fp16")
    elif precision == "int8":
        args += ["--int8", "--fp16"]  # Q/DQ layers run in int8; the rest may take fp16
    return " ".join(shlex.quote(a) for a in args)


def tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT is not installed here: build engines on the Jetson (JetPack ships it), with "
                        "build_engines.sh in the bundle or `python -m lamsc.export.engines BUNDLE`") from None
    return trt


def build_engine(onnx_file: str | Path, engine_file: str | Path, spec: GraphSpec, precision: str,
                 workspace_mib: int = 1024, timing_cache: str | Path | None = None) -> Path:
    """Parse ``onnx_file``, build a serialised engine for this device and write it to ``engine_file``."""
    trt = tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    legacy_flags = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 10; 11 is strongly typed only
    flags = 0
    if not legacy_flags:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT could not parse {onnx_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if legacy_flags and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if legacy_flags and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shape_profile(spec).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialised = builder.build_serialized_network(network, config)
    if serialised is None:
        raise UserError(f"TensorRT failed to build an engine from {onnx_file}; run the trtexec command in the "
                        "bundle with --verbose to see which layer")
    engine_file = Path(engine_file)
    engine_file.write_bytes(bytes(serialised))
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return engine_file
