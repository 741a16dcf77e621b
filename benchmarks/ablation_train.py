"""One of the Deep JSCC ablation's matched pair, trained from scratch: lamsc (ASI and ASC on) or lamsc's own
codec with both off, by the same recipe, seed and steps.

    python benchmarks/ablation_train.py PHOTOS OUT --variant lamsc|plain [--asi 200] [--codec N] [--asc N]

``lamsc``: the default ModelConfig (16 feature channels, the 8 largest segments into ASI, 8 ASC depth levels).
``plain``: the same LamscModel with ``segments=0`` (no ASI: no segment enters, so the integrated map is zero,
the distortion is plain MSE and the ASI stage has nothing to learn), ``num_levels=1`` (ASC off: one depth
level, every feature sent in every stage) and ``channels=8``: with everything sent that is 8 values per 8 x 8
pixels, two per complex channel use, CBR = 8 / 384 = 1/48, the budget lamsc is run at.

Recipe: the shipped default's CPU recipe, ``PRESETS["default"]`` with crops of 128, batch 8, rate target 0.25,
crops at scales 1, 0.75 and 0.5, learning rate 3e-4, seed 0, precision "auto" (bf16 autocast on a CPU that
computes in it), a checkpoint every 100 steps. Both variants run the same stages (ASI, codec, ASC) with the
same step counts, so each stage's cosine schedule and fresh optimiser match; the plain model's ASI stage runs
0 steps. OUT is a run folder: running the same command again resumes it. Writes OUT/model.{safetensors,json},
OUT/curves.png and OUT/history.json; prints a line every 25 steps.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from lamsc.semcom.training import PRESETS, TrainJob, train_model

RECIPE = replace(PRESETS["default"], crop=128, batch=8, rate_target=PRESETS["gpu"].rate_target,
                 scales=PRESETS["gpu"].scales, checkpoint_every=100)
VARIANTS = {"lamsc": {}, "plain": {"segments": 0, "num_levels": 1, "channels": 8}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--variant", choices=list(VARIANTS), required=True)
    parser.add_argument("--asi", type=int, default=RECIPE.steps["asi"])
    parser.add_argument("--codec", type=int, default=RECIPE.steps["codec"])
    parser.add_argument("--asc", type=int, default=RECIPE.steps["asc"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the pair's figures: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    job = TrainJob(data=[args.photos], recipe=RECIPE, steps={"asi": args.asi, "codec": args.codec, "asc": args.asc},
                   out=args.out, device="cpu", **VARIANTS[args.variant])
    t0 = time.perf_counter()

    def report(stage, step, total, logs):
        if step % 25 == 0 or step == total:
            print(f"{time.perf_counter() - t0:7.0f} s {stage} {step}/{total} "
                  + " ".join(f"{k}={v:.4g}" for k, v in logs.items()), flush=True)

    print(train_model(job, report), flush=True)


if __name__ == "__main__":
    main()
