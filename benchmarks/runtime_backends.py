"""ONNX Runtime (fp32, fp16, int8 bundles) against PyTorch eager on the transmitter and receiver graphs.

    python benchmarks/runtime_backends.py [--repeats 10] [--out benchmarks/results]

Per bundled photograph: the transmitter graph (ASI + encoder + ASC mask) and the receiver graph (decoder)
on each backend, after a warm-up, median over repeats; ratios against PyTorch eager measured in this one
run. int8 twice: ``int8-trt`` as exported for TensorRT (signed int8 Q/DQ), ``int8-ort`` with ``--int8-for
onnxruntime`` (uint8 activations). Writes runtime_backends.{csv,md,json}.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from lamsc.export.bundle import Int8Options, write_bundle
from lamsc.export.samples import model_samples
from lamsc.runtime.backends import OnnxRuntimeBackend
from lamsc.semcom.torch_backend import TorchBackend
from lamsc.runtime.latency import Latency
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.skb import build_segmenter

from provenance import git_revision, processor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--photos", type=int, default=10, help="how many of the bundled photographs")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    model, photos = load_model(), bundled_photos()[: args.photos]
    samples = model_samples(model, build_segmenter(None), photos)
    backends = {"torch eager": TorchBackend(model, device="cpu")}
    with tempfile.TemporaryDirectory() as tmp:
        # int8 twice: as TensorRT takes it (signed int8 Q/DQ), and with the uint8 activations ORT on x86 prefers
        for label, precision, int8_for in (("fp32", "fp32", "tensorrt"), ("fp16", "fp16", "tensorrt"),
                                           ("int8-trt", "int8", "tensorrt"), ("int8-ort", "int8", "onnxruntime")):
            backends[f"onnxruntime {label}"] = OnnxRuntimeBackend(
                write_bundle(model, Path(tmp) / label, precision, images=photos[:3], int8=Int8Options(int8_for)))
        rows = []
        for i, item in enumerate(photos):
            for graph in ("transmitter", "receiver"):
                spec = backends["torch eager"].specs[graph]
                feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, samples[graph][i])}
                row = {"image": item.name, "size": "x".join(map(str, item.pixels.shape[:2])), "graph": graph}
                for name, b in backends.items():
                    row[name] = Latency.timing(lambda: b.run(graph, feeds), args.repeats).median_ms
                rows.append(row)
    names = list(backends)
    totals = {n: sum(r[n] for r in rows) for n in names}
    speedup = {n: totals["torch eager"] / totals[n] for n in names}
    git = git_revision()
    meta = {"git": git, "device": processor(), "cpu_threads": torch.get_num_threads(),
            "torch": torch.__version__, "repeats": args.repeats}
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "runtime_backends.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "size", "graph", *names])
        w.writeheader()
        w.writerows(rows)
    (args.out / "runtime_backends.json").write_text(json.dumps({"meta": meta, "rows": rows, "total_ms": totals,
                                                                 "speedup_vs_torch": speedup}, indent=2))
    lines = [f"# Transmitter + receiver graphs: ONNX Runtime vs PyTorch eager ({meta['cpu_threads']} CPU threads, "
             f"git {git})", "", "| image | size | graph | " + " | ".join(f"{n} ms" for n in names) + " |",
             "|---|---|---|" + "---:|" * len(names)]
    lines += [f"| {r['image']} | {r['size']} | {r['graph']} | " + " | ".join(f"{r[n]:.1f}" for n in names) + " |"
              for r in rows]
    lines += ["", "| | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
              "| total ms | " + " | ".join(f"{totals[n]:.0f}" for n in names) + " |",
              "| speed-up vs torch eager | " + " | ".join(f"{speedup[n]:.2f}x" for n in names) + " |"]
    (args.out / "runtime_backends.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-4:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
