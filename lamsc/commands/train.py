"""``lamsc train``: the three training steps (ASI, codec across SNRs, ASC) on image folders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import typer

from lamsc.commands.output import console, emit_json, progress
from lamsc.errors import UserError
from lamsc.semcom.images import bundled_photos, iter_images
from lamsc.semcom.model import LamscModel, ModelConfig
from lamsc.semcom.segmenter import build_segmenter, torch_device
from lamsc.semcom.synthetic import SHAPE_CLASSES, make_shapes
from lamsc.semcom.training import PRESETS, new_model, prepare, save_recipe, train as run_training


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
    channels: int = typer.Option(ModelConfig.channels, help="Feature maps at 1/8 resolution."),
    width: int = typer.Option(ModelConfig.width, help="Codec width."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N: where to train (auto: a GPU if there is one)."),
    precision: Optional[str] = typer.Option(None, help="auto (the recipes' default: bf16 autocast on CPUs that "
                                            "compute in bf16, else fp32), bf16 or fp32."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout."),
) -> None:
    """Train the LAM-SC codec in three steps; resumable, with progress and a loss/PSNR curve."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[preset], **({"precision": precision} if precision else {}))
    where = torch_device(device)
    if steps:
        cfg.steps = {**cfg.steps, **_parse_steps(steps)}
    images = list(iter_images(data)) if data else []
    if bundled:
        images += bundled_photos()
    classes: list[str] = []
    seg_classes = 0
    if synthetic:
        images += make_shapes(synthetic, seed=cfg.seed)
        classes, seg_classes = list(SHAPE_CLASSES), len(SHAPE_CLASSES) + 1
    if not images:
        raise UserError("no training images; pass --data DIR, --bundled or --synthetic N")
    if any(i.label is not None for i in images) and not synthetic:
        seg_classes = 21  # VOC: background + 20 classes
    if any(i.category is not None for i in images) and not synthetic:
        classes = sorted({i.name.split("/")[0] for i in images if i.category is not None})
    segmenter = build_segmenter(checkpoint)
    config = ModelConfig(channels=channels, width=width, classes=classes, seg_classes=seg_classes,
                         trained={"preset": preset, "images": len(images), "segmenter": segmenter.name,
                                  "data": [Path(d).name for d in data] + (["bundled"] if bundled else [])
                                  + ([f"synthetic:{synthetic}"] if synthetic else []), "recipe": dataclasses.asdict(cfg)})
    console.print(f"segmenter: [bold]{segmenter.name}[/]; {len(images)} images")
    with progress() as bar:
        task = bar.add_task("SKB segments", total=len(images))
        prepared = prepare(images, segmenter, config.segments, importance, lambda: bar.advance(task))
    if init is not None:
        start = LamscModel.load(init)
        if (start.config.classes, start.config.seg_classes) != (classes, seg_classes):
            raise UserError(f"{init} has heads for {start.config.classes or 'no'} classes / {start.config.seg_classes} "
                            "segmentation classes, unlike this data; fine-tune on data with the same labels")
        config = dataclasses.replace(start.config, trained={**config.trained, "init": str(init),
                                                            "init_trained": start.config.trained})
        model = new_model(config, cfg.seed)
        model.load_state_dict(start.state_dict())
    else:
        model = new_model(config, cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    save_recipe(cfg, out / "recipe.json")
    with progress() as bar:
        tasks = {s: bar.add_task(s, total=cfg.steps.get(s, 0)) for s in ("asi", "codec", "asc")}

        def report(stage, step, total, logs):
            desc = f"{stage} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items())
            bar.update(tasks[stage], completed=step, description=desc)

        state = run_training(model, prepared, cfg, out, report, device=where)
    last = {s: next((h for h in reversed(state["history"]) if h["stage"] == s), None) for s in ("asi", "codec", "asc")}
    if json_out:
        emit_json("train", {"model": str(out / "model.safetensors"), "final": last, "config": json.loads(config.to_json())})
    else:
        console.print(f"model: {out / 'model.safetensors'}  curves: {out / 'curves.png'}")
        for s, h in last.items():
            if h:
                console.print(f"  {s}: " + ", ".join(f"{k}={v:.4g}" for k, v in h.items() if isinstance(v, float)))


def _parse_steps(text: str) -> dict:
    try:
        pairs = [item.split("=") for item in text.split(",")]
        return {k.strip(): int(v) for k, v in pairs}
    except ValueError:
        raise UserError(f"--steps {text!r} is not like asi=100,codec=500,asc=300") from None
