"""The deploy bundle: a self-contained folder a Jetson needs, and nothing tied to this machine.

    BUNDLE/
      manifest.json        what is inside: hashes, input/output specs, precision, verification, versions
      transmitter.onnx     ASI + encoder + ASC mask network
      receiver.onnx        decoder + task heads
      skb_encoder.onnx     SAM/MobileSAM image encoder       (when built with a SAM checkpoint)
      skb_decoder.onnx     prompt encoder + mask decoder     (when built with a SAM checkpoint)
      density.safetensors  the digital mode's entropy model  (when the model has one, lamsc density fit)
      build_engines.sh     trtexec commands that build the TensorRT engines on the device
      JETSON.md            the steps to run it there

TensorRT engines are not shipped: they are tied to the GPU and the TensorRT version they were built with.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import onnx
import torch

from lamsc import __version__
from lamsc.errors import UserError
from lamsc.export.device_steps import write_device_steps
from lamsc.export.graph_checks import tensorrt_problems
from lamsc.export.manifest import FORMAT, FORMAT_VERSION, PRECISIONS, Bundle, load_bundle, sha256
from lamsc.export.onnx_export import MAX_RELATIVE, MIN_SQNR_DB, compare_outputs, export_onnx, run_both, to_fp16
from lamsc.export.quantise import CODEC_FLOAT, codec_link_metric, quantise_onnx
from lamsc.export.samples import model_samples, skb_samples
from lamsc.semcom.asc_levels import sent_levels
from lamsc.semcom.entropy import EntropyModel
from lamsc.semcom.graph_specs import GraphSpec
from lamsc.semcom.graphs import model_graphs, skb_graphs
from lamsc.semcom.images import NamedImage, bundled_photos
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import MaskGenerationOptions, Segmenter
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.transmission import same_channels

INT8_TARGETS = ("tensorrt", "onnxruntime")  # signed int8 Q/DQ only | uint8 activations where NNCF chose them
ENTROPY_FILE = "density.safetensors"
LIBRARIES = ("torch", "onnx", "onnxruntime", "nncf", "numpy", "segment-anything", "mobilesam-mirror")


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@dataclass(frozen=True)
class Int8Options:
    """How an int8 bundle is quantised (NNCF). ``runtime``: "tensorrt" (signed int8 Q/DQ only) or
    "onnxruntime" (uint8 activations where NNCF chose them, ONNX Runtime's U8S8 form on x86);
    ``calibration``: photographs NNCF calibrates on (None: the verification photographs; keep them apart
    from those a candidate is scored on); ``max_drop``: dB of link PSNR each codec graph may lose on them,
    held by accuracy control keeping the costliest layers in float (None: plain post-training quantisation)."""

    runtime: str = "tensorrt"
    calibration: list[NamedImage] | None = None
    max_drop: float | None = None


@dataclass(frozen=True)
class SamExport:
    """The SAM/MobileSAM knowledge base to export beside the codec: the module (``load_sam``), a name for the
    manifest, and the mask generation the runtime repeats with its graphs."""

    model: torch.nn.Module
    name: str = ""
    mask_options: MaskGenerationOptions = MaskGenerationOptions()


def write_bundle(model: LamscModel, out: str | Path, precision: str = "fp32", sam: SamExport | None = None,
                 segmenter: Segmenter | None = None, images: list[NamedImage] | None = None,
                 budget: dict | None = None, int8: Int8Options = Int8Options(),
                 entropy: EntropyModel | None = None) -> Bundle:
    """Export ``model`` (and the SKB's encoder/decoder with ``sam``) to a verified bundle in ``out``;
    ``precision`` is one of PRECISIONS.

    ``images`` (default: the bundled photographs) are what each graph is verified on against PyTorch;
    ``segmenter`` (default: the fallback) gives their SKB masks; ``budget`` is recorded in the manifest;
    ``entropy`` (the model's density, lamsc.semcom.entropy.load_entropy_model) goes into the bundle for the
    digital mode (``Bundle.entropy_model``).
    Raises UserError for an unknown precision or int8 runtime, a negative drop, or an ``out`` folder that
    holds something other than a bundle; and when a graph's outputs are off PyTorch's beyond the precision's
    tolerance (lamsc.export.onnx_export).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if int8.runtime not in INT8_TARGETS:
        raise UserError(f"int8 for {int8.runtime!r}: give one of {', '.join(INT8_TARGETS)} (the runtime that will "
                        "run it)")
    if entropy is not None:
        same_channels(entropy, model.config)
    if int8.max_drop is not None and int8.max_drop < 0:
        raise UserError(f"int8 max drop {int8.max_drop:g} dB is negative: give the PSNR (dB) int8 may lose, e.g. 0.1")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise UserError(f"{out} exists and is not a lamsc bundle; choose an empty or new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    images = images or bundled_photos()
    model = model.eval()
    graphs = model_graphs(model)
    segmenter = segmenter or build_segmenter(None)
    if sam is not None:
        graphs.update(skb_graphs(sam.model))

    def samples_of(photos):
        found = model_samples(model, segmenter, photos)
        if sam is not None:
            found.update(skb_samples(graphs["skb_encoder"], photos[:2]))
        return found

    samples = samples_of(images)
    calibrated = samples_of(int8.calibration) if precision == "int8" and int8.calibration else samples
    entries = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = {name: export_onnx(module, module.spec(), module.example(), Path(tmp) / f"{name}.fp32.onnx")
                for name, module in graphs.items()}
        for name, module in graphs.items():
            final = out / f"{name}.onnx"
            if precision == "fp32":
                shutil.copy(fp32[name], final)
            elif precision == "fp16":
                to_fp16(fp32[name], final)
            else:
                quantise_graph(module.spec(), fp32, final, calibrated, model.config.num_levels, int8.runtime,
                               int8.max_drop)
            entries[name] = graph_entry(module, module.spec(), final, samples[name], precision,
                                        model.config.num_levels)
    carried = None
    if entropy is not None:
        density = entropy.save(out / ENTROPY_FILE)
        carried = {"file": ENTROPY_FILE, "sha256": sha256(density), "fingerprint": entropy.tables.fingerprint}
    manifest = {
        "format": FORMAT, "version": FORMAT_VERSION, "lamsc": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "precision": precision,
        "int8_for": int8.runtime if precision == "int8" else None,
        "int8": ({"calibrated_on": [i.name for i in int8.calibration or images], "max_drop_db": int8.max_drop}
                 if precision == "int8" else None),
        "model": json.loads(model.config.to_json()),
        "skb": ({"kind": "sam", "source": sam.name, "mask_generation": sam.mask_options.to_dict()}
                if sam is not None else {"kind": "fallback"}),
        "graphs": entries, "entropy": carried, "budget": budget, "libraries": library_versions(),
        "verified_on": [i.name for i in images],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    write_device_steps(Bundle(out, manifest))
    return load_bundle(out)


def quantise_graph(spec: GraphSpec, fp32: dict[str, Path], out: Path, samples: dict[str, list], num_levels: int,
                   int8_for: str, max_drop: float | None) -> None:
    """NNCF int8 of graph ``spec.name`` calibrated on ``samples``; the codec's graphs accuracy-controlled on
    the link's PSNR when ``max_drop`` is given (the SKB's graphs have no photograph to score against)."""
    name = spec.name
    feeds = [{t.name: x.numpy() for t, x in zip(spec.inputs, s)} for s in samples[name]]
    codec = name in ("transmitter", "receiver")
    options = {"keep_float": CODEC_FLOAT} if codec else {}
    if codec and max_drop is not None:
        photos = [s[0].numpy() for s in samples["transmitter"]]  # sample i of either graph is photograph i
        metric = codec_link_metric(name, fp32, num_levels)
        options.update(metric=metric, validation=list(zip(feeds, photos)), max_drop=max_drop)
    quantise_onnx(fp32[name], out, feeds, transformer=name.startswith("skb"), tensorrt=int8_for == "tensorrt",
                  **options)


def graph_entry(module, spec: GraphSpec, path: Path, samples: list[tuple], precision: str, num_levels: int) -> dict:
    """Verify one exported graph against PyTorch on every sample and describe it for the manifest."""
    worst: dict[str, dict] = {}
    depths = []  # (ONNX Runtime's, PyTorch's) ASC depth map per sample, for graphs that output one
    names = [t.name for t in spec.outputs]
    for s in samples:
        ref, got = run_both(module, spec, path, s)
        if "depth" in names:
            depths.append((got[names.index("depth")], ref[names.index("depth")]))
        for c in compare_outputs(spec, ref, got):
            d = c.to_dict()
            if c.output in worst:  # over the samples: the largest error and the lowest SQNR
                w = worst[c.output]
                d = {**d, "max_abs": max(d["max_abs"], w["max_abs"]), "relative": max(d["relative"], w["relative"]),
                     "sqnr_db": min(d["sqnr_db"], w["sqnr_db"]), "range": max(d["range"], w["range"])}
            worst[c.output] = d
    if precision in MIN_SQNR_DB:
        tolerance = {"min_sqnr_db": MIN_SQNR_DB[precision]}
        failed = [w for w in worst.values() if w["sqnr_db"] < MIN_SQNR_DB[precision]]
    else:
        tolerance = {"max_relative": MAX_RELATIVE[precision]}
        failed = [w for w in worst.values() if w["relative"] > MAX_RELATIVE[precision]]
    if failed:
        w = failed[0]
        raise UserError(f"{spec.name} output {w['output']} in {precision} is off PyTorch by {w['relative']:.3g} of its "
                        f"range, SQNR {w['sqnr_db']:.1f} dB (tolerance {tolerance}); export in a higher precision")
    graph = onnx.load(str(path))
    opset = next(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    verification = {"tolerance": tolerance, "samples": len(samples), "worst": list(worst.values())}
    if depths:
        verification["rate"] = rate_against_pytorch(depths, num_levels)
    return {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "opset": opset,
            **spec.to_dict(), "verification": verification, "tensorrt_problems": tensorrt_problems(graph)}


def rate_against_pytorch(depths: list[tuple], num_levels: int) -> dict:
    """How much the exported transmitter sends against PyTorch: the ASC feature levels it keeps by its own
    choice as the link sends it (``sent_levels``), per verification photograph and over all of them, from
    (exported, PyTorch) depth maps. A reduced precision moves the depth map across level boundaries, which
    changes the rate where SQNR shows only an error."""
    kept = [(int(sent_levels(got[:, 0], num_levels).sum()),
             int(sent_levels(ref[:, 0], num_levels).sum())) for got, ref in depths]
    return {"levels_x_pytorch": [round(k / r, 4) for k, r in kept],
            "overall": round(sum(k for k, _ in kept) / sum(r for _, r in kept), 4)}
