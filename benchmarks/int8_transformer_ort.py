"""INT8 against FP32 for a transformer SKB encoder in ONNX Runtime, with and without lamsc's session fix.

ONNX Runtime's MatMulAddFusion turns each Linear of an NNCF-quantised transformer (3-D DQ -> MatMul -> Add)
into Reshape -> DQ -> Gemm before its QDQ fusions run, and leaves that Gemm in float. lamsc's sessions
(lamsc.export.onnx_export.session) disable the fusion for Q/DQ graphs. This times, in one interleaved
run: the fp32 graph, the int8 graph with ORT's default optimisations, and the int8 graph as lamsc runs it;
and sums ORT's profile by operator for each, which shows where the int8 time goes.

    python benchmarks/int8_transformer_ort.py [--sam CHECKPOINT] [--repeats 5] [--name mobilesam]

Without --sam: MobileSAM vit_t from mobile_sam's builder with random weights (no weights can be
downloaded here); calibration on 8 bundled photographs. Writes int8_transformer_ort_<name>.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from provenance import processor

RESULTS = Path(__file__).parent / "results"


def build(sam_checkpoint: Path | None, work: Path) -> tuple[Path, Path, np.ndarray]:
    import torch

    from lamsc.export.quantise import quantise_onnx
    from lamsc.compress.skb import sam_inputs
    from lamsc.semcom.graphs import SkbEncoderGraph
    from lamsc.export.onnx_export import export_onnx
    from lamsc.semcom.images import bundled_photos
    from lamsc.semcom.sam_architecture import mobile_sam
    from lamsc.semcom.sam_checkpoint import load_sam

    if sam_checkpoint is None:
        torch.manual_seed(0)
        sam_checkpoint = work / "mobile_sam_random.pt"
        torch.save(mobile_sam().build_sam_vit_t(checkpoint=None).state_dict(), sam_checkpoint)
    sam, _ = load_sam(sam_checkpoint)
    graph = SkbEncoderGraph(sam).eval()
    fp32 = export_onnx(graph, graph.spec(), graph.example(), work / "skb_encoder.onnx")
    mean, std = sam.pixel_mean.view(1, 3, 1, 1), sam.pixel_std.view(1, 3, 1, 1)
    images = [(x * std + mean).numpy() for x in sam_inputs(sam, bundled_photos()[:8])]
    int8 = quantise_onnx(fp32, work / "skb_encoder_int8.onnx", [{"image": x} for x in images], transformer=True,
                         tensorrt=False)
    return fp32, int8, images[0]


def sessions(fp32: Path, int8: Path, threads: int) -> dict:
    import onnxruntime as ort

    from lamsc.export.onnx_export import session

    def plain(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    return {"fp32": session(fp32, ["CPUExecutionProvider"], threads), "int8 (ORT defaults)": plain(int8),
            "int8 (lamsc session)": session(int8, ["CPUExecutionProvider"], threads)}


def time_interleaved(runs: dict, feed: dict, repeats: int) -> dict:
    for s in runs.values():
        s.run(None, feed)
    seconds = {k: [] for k in runs}
    for _ in range(repeats):
        for k, s in runs.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            seconds[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v) * 1e3) for k, v in seconds.items()}


def profile_by_op(path: Path, feed: dict, threads: int, disabled: list[str]) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.enable_profiling = threads, True
    # Beside the model, not in the caller's directory: an interrupted run must not litter the checkout.
    options.profile_file_prefix = str(path.with_suffix("")) + "_profile"
    s = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled)
    s.run(None, feed)
    trace = Path(s.end_profiling())
    by_op = collections.Counter()
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1e3
    trace.unlink()
    return {k: round(v, 1) for k, v in by_op.most_common(8)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sam", type=Path, help="SAM/MobileSAM checkpoint; default: random-weight MobileSAM vit_t")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="mobilesam")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8, image = build(args.sam, Path(tmp))
        feed = {"image": image}
        runs = sessions(fp32, int8, args.threads)
        ms = time_interleaved(runs, feed, args.repeats)
        profiles = {"int8 (ORT defaults)": profile_by_op(int8, feed, args.threads, []),
                    "int8 (lamsc session)": profile_by_op(int8, feed, args.threads, ["MatMulAddFusion"])}
    result = {"model": str(args.sam or "MobileSAM vit_t, random weights"), "machine": processor(),
              "threads": args.threads, "repeats": args.repeats, "median_ms": ms,
              "x_fp32": {k: round(v / ms["fp32"], 3) for k, v in ms.items()}, "profile_ms_by_op": profiles}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"int8_transformer_ort_{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = ["| session | median ms | x fp32 |", "|---|---|---|"]
    lines += [f"| {k} | {v:.0f} | {result['x_fp32'][k]:.2f} |" for k, v in ms.items()]
    for k, ops in profiles.items():
        lines += ["", f"{k}, ORT profile by operator (ms, one run): " + ", ".join(f"{o} {t}" for o, t in ops.items())]
    (args.out / f"int8_transformer_ort_{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
