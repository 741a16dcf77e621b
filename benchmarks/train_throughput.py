"""Training throughput: crops per second of lamsc's training loop, fp32 against bf16 autocast, in one run.

    python benchmarks/train_throughput.py [--steps 40] [--device auto] [--out benchmarks/results]

Runs ``lamsc.semcom.training.train`` itself (the default recipe's crop and batch, the default model's
architecture from a fresh seed) for ``--steps`` codec-stage and ASC-stage steps at each precision, on the
bundled photographs, and times each step from the loop's own progress calls after five warm-up steps.
Each precision also reports the mean training PSNR of its last steps, so that a precision that trains
faster but worse shows it. Writes train_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.segmenter import torch_device
from lamsc.semcom.training import PRESETS, new_model, prepare, train

from provenance import git_revision, processor

WARMUP = 5


def run(precision: str, steps: int, device: torch.device, prepared) -> dict:
    cfg = dataclasses.replace(PRESETS["default"], precision=precision,
                              steps={"asi": 0, "codec": steps, "asc": steps}, checkpoint_every=10**9)
    stamps: dict[str, list[float]] = {"codec": [], "asc": []}
    psnr: dict[str, list[float]] = {"codec": [], "asc": []}

    def progress(stage, step, total, logs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps[stage].append(time.perf_counter())
        psnr[stage].append(logs["psnr"])

    with tempfile.TemporaryDirectory() as out:
        train(new_model(load_model().config, seed=0), prepared, cfg, Path(out), progress, device=device)
    result = {}
    for stage, t in stamps.items():
        per_step = np.diff(t[WARMUP - 1:])
        result[stage] = {"crops_per_s": cfg.batch / float(np.median(per_step)), "steps_timed": len(per_step),
                         "psnr_last": float(np.mean(psnr[stage][-10:]))}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    device = torch_device(args.device)
    prepared = prepare(bundled_photos(), FallbackSegmenter(), load_model().config.segments)
    results = {precision: run(precision, args.steps, device, prepared) for precision in ("fp32", "bf16")}
    speedup = {s: results["bf16"][s]["crops_per_s"] / results["fp32"][s]["crops_per_s"] for s in ("codec", "asc")}
    git = git_revision()
    name = processor(device)
    meta = {"git": git, "device": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "steps": args.steps, "batch": PRESETS["default"].batch, "crop": PRESETS["default"].crop}
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cpu" else "_gpu"
    (args.out / f"train_throughput{suffix}.json").write_text(json.dumps({"meta": meta, "results": results,
                                                                         "speedup": speedup}, indent=2))
    lines = [f"# Training throughput on {name} ({meta['threads']} threads, torch {meta['torch']}, git {git})", "",
             f"`python benchmarks/train_throughput.py --steps {args.steps} --device {args.device}`: the training loop "
             f"itself, batch {meta['batch']} of {meta['crop']}² crops, median step after {WARMUP} warm-up steps.", "",
             "| stage | fp32 crops/s | bf16 crops/s | bf16 / fp32 | fp32 PSNR (last 10) | bf16 PSNR (last 10) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {s} | {results['fp32'][s]['crops_per_s']:.1f} | {results['bf16'][s]['crops_per_s']:.1f} | "
              f"{speedup[s]:.2f}x | {results['fp32'][s]['psnr_last']:.2f} | {results['bf16'][s]['psnr_last']:.2f} |"
              for s in ("codec", "asc")]
    (args.out / f"train_throughput{suffix}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
