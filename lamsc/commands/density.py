"""``lamsc density fit``: the entropy model of a lamsc model's digital mode (lamsc.semcom.entropy)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from lamsc.commands.output import console, emit_json, progress
from lamsc.semcom.entropy import STEPS, density_path, model_base
from lamsc.semcom.entropy_fit import KEPT_FIT_SIDE, fit_entropy_model, fit_kept_fractions
from lamsc.semcom.images import iter_images
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.model import LamscModel
from lamsc.semcom.skb import build_segmenter

density = typer.Typer(help="The entropy model the digital mode (lamsc transmit --digital) codes features with.",
                      no_args_is_help=True)


@density.command()
def fit(model: Optional[Path] = typer.Option(None, help="lamsc model (.safetensors with .json); default: the "
                                             "shipped model."),
        images: list[Path] = typer.Option(..., "--images", help="Photographs or folders to fit on (repeatable), "
                                          "as a rule those the model was trained on; not the ones it is scored on "
                                          "(the benchmarks score scikit-image's bundled photographs)."),
        checkpoint: Optional[Path] = typer.Option(None, help="SAM/MobileSAM checkpoint for the SKB (default: "
                                                  "fallback)."),
        steps: int = typer.Option(400, help="Adam steps of the density's fit (the quantiser step is `lamsc "
                                   "transmit --step`)."),
        seed: int = typer.Option(0, help="Seed of the sampling and the dither."),
        kept_images: int = typer.Option(16, min=0, help="Photographs (spread evenly over --images) to fit the "
                                        "digital mode's kept fraction per quantiser step on, each scaled to at most "
                                        f"{KEPT_FIT_SIDE} px: every step and fraction is coded and decoded, about 35 s "
                                        "per photograph on two CPU cores; 0: none (ASC's own choice)."),
        json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """Fit the entropy model of a model's features (a factorised density and its context tables) and save it
    beside the model (NAME.density.safetensors)."""
    base = model_base(model) if model is not None else DEFAULT_MODEL
    net = LamscModel.load(base)
    photos = [item.pixels for item in iter_images(images)]
    segmenter = build_segmenter(checkpoint)  # one SKB for both fits: a SAM checkpoint is loaded once
    with progress() as bar:
        task = bar.add_task("fitting the density", total=steps)
        fitted = fit_entropy_model(net, photos, segmenter, steps=steps, seed=seed,
                                   progress=lambda step, total, bits: bar.update(
                                       task, completed=step, description=f"fitting the density {bits:.3f} bit/value"))
    if kept_images > 0 and net.config.num_levels > 1:
        chosen = [photos[i] for i in np.unique(np.linspace(0, len(photos) - 1, kept_images).round().astype(int))]
        t0 = time.perf_counter()
        with progress() as bar:
            task = bar.add_task("kept fraction per quantiser step", total=len(chosen))
            fitted.kept = fit_kept_fractions(net, fitted, chosen, segmenter,
                                             progress=lambda done, total: bar.update(task, completed=done))
        fitted.provenance |= {"kept_images": len(chosen), "kept_seconds": round(time.perf_counter() - t0, 1)}
    path = fitted.save(density_path(base), base.with_name(base.name + ".safetensors"))
    if json_out:
        emit_json("density fit", {"density": str(path), "quantiser_steps": list(STEPS), "kept": fitted.kept,
                                  **fitted.provenance})
        return
    console.print(f"density: {path} ({fitted.provenance['images']} images, {fitted.provenance['values']} values, "
                  f"{fitted.provenance['final_bits_per_value']} bit/value at the last Adam step)")
    console.print(f"quantiser steps: {', '.join(f'{s:g}' for s in STEPS)}")
    if fitted.kept is not None:
        console.print(f"kept fraction per step: {', '.join(f'{k:g}' for k in fitted.kept)}")
