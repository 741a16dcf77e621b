"""The CPU half of the shipped default: a GPU run's codec kept, ASC's mask network learned afresh.

    python benchmarks/default_model_finetune.py GPU_MODEL PHOTOS OUT [--codec 220] [--asc 130]

GPU_MODEL: the model `sh benchmarks/gpu_train.sh` wrote (OUT/lamsc-default). The encoder's output convolution
is first scaled so that its features have unit mean power on the first photographs: the link normalises the
power of what it sends, so this changes no reconstruction, and it keeps the features inside float16's range
for fp16 bundles. Then the codec trains across ASC depths (nested dropout) and ASC at random rates, in the
default recipe's crops of 96 pixels, with the rate target of the gpu preset, on this machine's CPU.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import iter_images
from lamsc.semcom.model import LamscModel
from lamsc.semcom.training import PRESETS, TrainJob, prepare, train_model


def unit_feature_power(model: LamscModel, photos: Path, count: int = 8) -> float:
    """Scale the encoder's output convolution so its features have unit mean power; returns the old RMS."""
    images = prepare(list(iter_images([photos]))[:count], FallbackSegmenter(), model.config.segments)
    power = []
    with torch.no_grad():
        for item in images:
            x = torch.from_numpy(item.pixels[:256, :256]).permute(2, 0, 1)[None].float() / 255
            bits = torch.from_numpy(item.masks[:256, :256]).long()[None, None]
            masks = ((bits >> torch.arange(model.config.segments).view(1, -1, 1, 1)) & 1).float()
            power.append(model.encode(x, masks, torch.tensor([10.0]), asc=False)["features"].pow(2).mean())
        rms = float(torch.stack(power).mean().sqrt())
        model.encoder.out.weight /= rms
        model.encoder.out.bias /= rms
    return rms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gpu_model", type=Path)
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--codec", type=int, default=220)
    parser.add_argument("--asc", type=int, default=130)
    args = parser.parse_args()
    model = LamscModel.load(args.gpu_model)
    print(f"encoder features: RMS {unit_feature_power(model, args.photos):.4g} scaled to 1")
    start = args.out / "unit-power" / "model"
    model.save(start)
    recipe = replace(PRESETS["default"], crop=96, rate_target=PRESETS["gpu"].rate_target,
                     scales=PRESETS["gpu"].scales, checkpoint_every=50)
    job = TrainJob(data=[args.photos], recipe=recipe, init=start, reinit=("mask_net",),
                   steps={"asi": 0, "codec": args.codec, "asc": args.asc}, out=args.out / "train", device="cpu")
    print(train_model(job, lambda stage, step, total, logs: print(stage, step, total, logs, flush=True)))


if __name__ == "__main__":
    main()
