"""``lamsc train``: the three training steps (ASI, codec across SNRs, ASC) on image folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from lamsc.commands.output import console, emit_json, progress
from lamsc.errors import UserError
from lamsc.semcom.distributed import launched
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.training import PRESETS, TrainJob, train_model


def train(
    data: list[Path] = typer.Option([], "--data", help="Image folder, class folders or VOC layout (repeatable)."),
    bundled: bool = typer.Option(False, help="Add scikit-image's bundled photographs."),
    synthetic: int = typer.Option(0, help="Add this many labelled synthetic shapes (classes + masks)."),
    preset: str = typer.Option("default", help=f"Recipe: {', '.join(PRESETS)}."),
    out: Path = typer.Option(Path("lamsc-out/train"), help="Folder for the model, state and curves; "
                             "an existing one is resumed."),
    checkpoint: Optional[Path] = typer.Option(None, help="SAM/MobileSAM checkpoint for the SKB (default: fallback)."),
    importance: Optional[Path] = typer.Option(None, help="Folder of experience maps <image>.png (see docs)."),
    steps: Optional[str] = typer.Option(None, help="Override steps per stage, e.g. asi=100,codec=500,asc=300."),
    init: Optional[Path] = typer.Option(None, help="Start from this lamsc model's weights and config (fine-tune)."),
    reinit: list[str] = typer.Option([], "--reinit", help="A part of the --init model that starts afresh "
                                     "(repeatable): asi, encoder, mask_net, decoder, classifier, segmenter_head."),
    train_part: list[str] = typer.Option([], "--train-part", help="Train only this part (repeatable), the rest "
                                         "fixed, and skip the stages that train none of them: decoder keeps the "
                                         "payloads as they are. Parts as for --reinit."),
    channels: int = typer.Option(ModelConfig.channels, help="Feature maps at 1/8 resolution."),
    width: int = typer.Option(ModelConfig.width, help="Codec width."),
    segments: int = typer.Option(ModelConfig.segments, help="SKB segments into ASI (0: no ASI)."),
    levels: int = typer.Option(ModelConfig.num_levels, help="ASC depth levels (1: ASC off, every feature sent)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N: where to train (auto: a GPU if there "
                               "is one)."),
    precision: Optional[str] = typer.Option(None, help="auto (the recipes' default: bf16 autocast on CPUs that "
                                            "compute in bf16, else fp32), bf16 or fp32."),
    distortion: Optional[str] = typer.Option(None, help="What the link stages minimise: mse (the recipes' "
                                             "default) or psnr (the mean PSNR's gradient: each crop by its dB)."),
    minutes: Optional[float] = typer.Option(None, help="Wall-clock budget: the recipe's steps scaled to fill "
                                            "it on this device (gpu: 6 by default, gpu-refine: 8; 0: none, the steps "
                                            "as given)."),
    seed: Optional[int] = typer.Option(None, help="The recipe's seed: crops, SNRs, channel noise and a new "
                                       "model's weights."),
    lr: Optional[float] = typer.Option(None, help="The recipe's peak learning rate (a cosine to 0 over each "
                                       "stage)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Train the LAM-SC codec in three steps; resumable, with progress and a loss/PSNR curve. Under
    `torchrun --nproc_per_node N` it trains on N processes (N GPUs), each step on N x the recipe's batch."""
    job = TrainJob(data=data, bundled=bundled, synthetic=synthetic, recipe=preset,
                   steps=_parse_steps(steps) if steps else {}, precision=precision, distortion=distortion,
                   minutes=minutes, out=out, parts=tuple(train_part), seed=seed, lr=lr,
                   sam_checkpoint=checkpoint, importance=importance, init=init, reinit=tuple(reinit),
                   channels=channels, width=width, segments=segments, num_levels=levels, device=device)
    if not launched().main:  # torchrun's other processes train alongside rank 0, which draws and prints
        train_model(job)
        return
    with progress() as bar:
        seg_task = bar.add_task("SKB segments", total=None)
        tasks = {}

        def report(stage, step, total, logs):
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            described = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            bar.update(tasks[stage], completed=step, description=f"{stage} {described}")

        result = train_model(job, report, lambda: bar.advance(seg_task))
    if json_out:
        emit_json("train", {"model": str(result.model), "final": result.final,
                            "config": json.loads(result.config.to_json())})
        return
    console.print(f"segmenter: [bold]{result.config.trained['segmenter']}[/]; {result.config.trained['images']} images")
    console.print(f"model: {result.model}  curves: {result.curves}")
    for s, h in result.final.items():
        if h:
            console.print(f"  {s}: " + ", ".join(f"{k}={v:.4g}" for k, v in h.items() if isinstance(v, float)))


def _parse_steps(text: str) -> dict:
    try:
        pairs = [item.split("=") for item in text.split(",")]
        return {k.strip(): int(v) for k, v in pairs}
    except ValueError:
        raise UserError(f"--steps {text!r} is not like asi=100,codec=500,asc=300") from None
