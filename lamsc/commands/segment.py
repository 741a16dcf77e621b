"""``lamsc segment``: segment images with the SKB and write an overlay PNG per image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterable, Optional

import typer
from rich.table import Table

from lamsc.commands.output import IMAGES_HELP, console, emit_json, number, print_table, progress
from lamsc.errors import UserError
from lamsc.semcom.images import NamedImage, iter_images
from lamsc.semcom.overlay import overlay, save_png
from lamsc.semcom.segmenter import COUNT_MINIMA, MaskGenerationOptions, Segmenter
from lamsc.semcom.skb import build_segmenter

_defaults = MaskGenerationOptions()
# MaskGenerationOptions' fields by the flags that set them
SAM_FLAGS = {"points_per_side": "--points-per-side", "points_per_batch": "--points-per-batch",
             "pred_iou_thresh": "--pred-iou-thresh", "stability_score_thresh": "--stability-thresh",
             "box_nms_thresh": "--nms-thresh", "min_mask_region_area": "--min-area", "crop_n_layers": "--crop-layers",
             "max_segments": "--max-segments"}


def segment(
    images: list[Path] = typer.Argument(..., help=IMAGES_HELP),
    checkpoint: Optional[Path] = typer.Option(None, help="SAM (.pth) or MobileSAM (.pt) checkpoint; "
                                              "without one the classical fallback segments."),
    model_type: str = typer.Option("auto", help="auto, vit_t (MobileSAM), vit_b, vit_l or vit_h."),
    points_per_side: int = typer.Option(_defaults.points_per_side, min=COUNT_MINIMA["points_per_side"],
                                        help="Prompt grid is this many points a side."),
    points_per_batch: int = typer.Option(_defaults.points_per_batch, min=COUNT_MINIMA["points_per_batch"],
                                         help="Prompts decoded together."),
    pred_iou_thresh: float = typer.Option(_defaults.pred_iou_thresh, help="Drop masks SAM rates below this IoU."),
    stability_thresh: float = typer.Option(_defaults.stability_score_thresh, help="Drop less stable masks."),
    nms_thresh: float = typer.Option(_defaults.box_nms_thresh, help="Box IoU above which duplicates go."),
    min_area: int = typer.Option(_defaults.min_mask_region_area, min=COUNT_MINIMA["min_mask_region_area"],
                                  help="Remove holes/islands below this area."),
    crop_layers: int = typer.Option(_defaults.crop_n_layers, min=COUNT_MINIMA["crop_n_layers"],
                                     help="Run again on 2^i crops per layer."),
    max_segments: Optional[int] = typer.Option(None, min=COUNT_MINIMA["max_segments"],
                                                help="Keep only the largest this many segments."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    out: Path = typer.Option(Path("lamsc-out/segments"), help="Folder for the overlay PNGs."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of the table."),
) -> None:
    """Segment images with SAM, MobileSAM or the fallback; write an overlay PNG per image."""
    options = MaskGenerationOptions(points_per_side, points_per_batch, pred_iou_thresh, stability_thresh,
                                    nms_thresh, min_area, crop_layers, max_segments)
    if checkpoint is None and options != _defaults:  # the fallback has none of SAM's settings
        changed = [flag for name, flag in SAM_FLAGS.items() if getattr(options, name) != getattr(_defaults, name)]
        verb = "sets" if len(changed) == 1 else "set"
        raise UserError(f"{', '.join(changed)} {verb} SAM's mask generation: give a --checkpoint to segment with "
                        "SAM (the fallback segmenter has none of these settings)")
    segmenter = build_segmenter(checkpoint, model_type, options, device)
    results = segment_images(segmenter, iter_images(images, bundled_names=True), out)
    report(segmenter, options if checkpoint else None, results, json_out)


def segment_images(segmenter: Segmenter, images: Iterable[NamedImage], out: Path) -> list[dict]:
    """Segment each image, save ``<name>_segments.png`` in ``out`` and return one summary per image."""
    out.mkdir(parents=True, exist_ok=True)
    console.print(f"segmenter: [bold]{segmenter.name}[/]")
    results = []
    images = list(images)
    with progress() as bar:
        for item in bar.track(images, description="segmenting"):
            start = time.perf_counter()
            segments = segmenter.segment(item.pixels)
            seconds = time.perf_counter() - start
            path = out / f"{item.name}_segments.png"
            save_png(overlay(item.pixels, segments), path)
            results.append({"image": item.name, "overlay": str(path), "seconds": round(seconds, 4),
                            **segments.summary()})
    return results


def report(segmenter: Segmenter, options: MaskGenerationOptions | None, results: list[dict], json_out: bool,
           title: str = "segments") -> None:
    if json_out:
        emit_json("segment", {"segmenter": segmenter.name,
                              "options": options.to_dict() if options else None, "images": results})
        return
    table = Table(title=f"{title} — {segmenter.name}")
    for col in ("image", "size", "segments", "largest %", "mean score", "ms", "overlay"):
        table.add_column(col, justify="left" if col in ("image", "overlay") else "right")
    for r in results:
        h, w = r["image_size"]
        largest = 100.0 * max(r["areas"], default=0) / (h * w)
        mean = sum(r["scores"]) / len(r["scores"]) if r["scores"] else float("nan")
        table.add_row(r["image"], f"{w}×{h}", str(r["count"]), f"{largest:.1f}", number(mean, ".3f"),
                      f"{1000 * r['seconds']:.0f}", r["overlay"])
    print_table(table, 160)  # room for the overlay paths
