"""``lamsc profile``: latency and energy per transmitted image, lamsc beside quality-matched JPEG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from lamsc.commands.output import console, emit_json, number, print_table, progress
from lamsc.errors import UserError
from lamsc.runtime.backends import is_bundle
from lamsc.runtime.deployment import Deployment, describe
from lamsc.runtime.energy import METERS, energy_meter
from lamsc.runtime.radio import RADIOS, radio as radio_preset
from lamsc.semcom.baseline import MAX_SIDE
from lamsc.semcom.channels import CHANNELS, Channel
from lamsc.semcom.images import bundled_photos, iter_images
from lamsc.semcom.metrics import strict_json


def profile(
    source: Optional[Path] = typer.Argument(None, help="A bundle folder (from lamsc export) or a model "
                                            "checkpoint; default: the shipped model."),
    images: Optional[list[Path]] = typer.Option(None, help="Images or folders; default: the bundled photographs."),
    backend: Optional[str] = typer.Option(None, help="torch | onnxruntime | tensorrt; default: onnxruntime for "
                                          "a bundle, torch for a checkpoint."),
    energy: str = typer.Option("auto", help=f"Energy meter: {' | '.join(METERS)}."),
    radio: str = typer.Option("wifi", help=f"Radio preset: {' | '.join(RADIOS)}."),
    device_profile: str = typer.Option("cpu", help="Device whose declared power the model meter uses "
                                       "(cpu, orin-nano, orin-nx, agx-orin, xavier-nx)."),
    snr: float = typer.Option(10.0, help="Channel SNR in dB."),
    channel: str = typer.Option("awgn", help=f"One of {', '.join(CHANNELS)}."),
    sam_checkpoint: Optional[Path] = typer.Option(None, help="SKB for a checkpoint (default: the fallback)."),
    repeats: int = typer.Option(5, min=1, help="Timed runs per image after one warm-up run."),
    out: Path = typer.Option(Path("lamsc-out/profile"), help="Folder for profile.json and energy.png."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
) -> None:
    """Profile bits, quality, per-stage latency (median/p90/p99) and energy per transmitted image."""
    result = run_profile(source, images, backend, energy, radio, device_profile, snr, channel, sam_checkpoint,
                               repeats, out)
    if json_out:
        emit_json("profile", result)
        return
    report(result)


def run_profile(source, images, backend, energy, radio, device_profile, snr, channel, sam_checkpoint, repeats, out,
                photos=None):
    import json

    from lamsc.runtime.endpoints import EdgeReceiver, EdgeTransmitter
    from lamsc.runtime.profiler import plot_energy, profile_image, summary

    ch = Channel(channel, snr)
    rad = radio_preset(radio)
    deployment = Deployment(str(source) if source else None, backend or ("onnxruntime" if is_bundle(source) else "torch"),
                            str(sam_checkpoint) if sam_checkpoint else None)
    backend_obj, config, segmenter = deployment.open()
    meter = energy_meter(energy, device_profile, cores=torch.get_num_threads() if device_profile == "cpu" else 1,
                         work_on=backend_obj.processor)
    tx, rx = EdgeTransmitter(backend_obj, config, segmenter, snr), EdgeReceiver(backend_obj)
    if photos is None:
        photos = list(iter_images(images)) if images else bundled_photos()
    for item in photos:  # each image is compared with JPEG, which has a longest side
        if max(item.pixels.shape[:2]) > MAX_SIDE["jpeg"]:
            h, w = item.pixels.shape[:2]
            raise UserError(f"{item.name} is {w} x {h} pixels: profile compares it with JPEG, which encodes at most "
                            f"{MAX_SIDE['jpeg']} pixels a side; crop or cut it into tiles")
    rows = []
    with progress() as bar:
        for k, item in enumerate(bar.track(photos, description=f"profiling on {backend_obj.name}")):
            rows.append(profile_image(item, tx, rx, ch, meter, rad, repeats, 1, seed=k))
    out.mkdir(parents=True, exist_ok=True)
    result = {"source": describe(source), "backend": backend_obj.name, "segmenter": segmenter.name,
              "channel": ch.name, "snr_db": snr, "radio": {"preset": radio, "name": rad.name, "source": rad.source},
              "energy_meter": {"source": meter.source, "estimate": meter.estimate}, "cpu_threads": torch.get_num_threads(),
              "cpu_count": os.cpu_count(), "summary": summary(rows), "images": rows}
    (out / "profile.json").write_text(json.dumps(strict_json(result), indent=2, allow_nan=False))
    title = (f"{result['backend']}, {ch.name} {snr:g} dB, {rad.name}; compute energy: {meter.source}")
    plot_energy(rows, out / "energy.png", title)
    result["files"] = {"json": str(out / "profile.json"), "png": str(out / "energy.png")}
    return result


def report(result: dict) -> None:
    est = " (ESTIMATE)" if result["energy_meter"]["estimate"] else ""
    table = Table(title=f"energy per transmitted image: {result['backend']}, {result['channel']} "
                        f"{result['snr_db']:g} dB, {result['radio']['name']}")
    for col in ("image", "kbit", "PSNR", "tx ms", "rx ms", "tx mJ", "radio mJ", "JPEG kbit", "JPEG mJ"):
        table.add_column(col, justify="left" if col == "image" else "right", no_wrap=True, max_width=18)
    for r in result["images"]:
        o, j = r["lamsc"], r["jpeg"]
        t = o["latency"]["total"]
        table.add_row(r["image"], f"{o['bits'] / 1e3:.1f}", number(o["psnr"], ".2f"), f"{t['median_ms']:.0f}",
                      f"{o['latency']['receive']['median_ms']:.0f}", f"{o['energy']['compute_j'] * 1e3:.0f}{'*' if est else ''}",
                      f"{o['energy']['radio_j'] * 1e3:.2f}", f"{j['bits'] / 1e3:.1f}", f"{j['energy']['total_j'] * 1e3:.1f}")
    print_table(table)
    s = result["summary"]
    console.print("tx ms: segment + encode + pack (median; p90, p99 in the JSON); tx mJ: its compute energy; "
                  "JPEG: quality matched to lamsc's PSNR, encode + radio")
    gpu = [r["lamsc"]["gpu_latency"] for r in result["images"] if r["lamsc"].get("gpu_latency")]
    if gpu:
        medians = ", ".join(f"{k} {sum(g[k]['median_ms'] for g in gpu) / len(gpu):.2f} ms" for k in gpu[0])
        console.print(f"graphs on the GPU by CUDA events (median, mean over images): {medians}")
    console.print(f"compute energy{' (* = estimate)' if est else ''} from {result['energy_meter']['source']}; "
                  f"SKB: {result['segmenter']}")
    console.print(f"mean per image: lamsc {s['lamsc']['total_j'] * 1e3:.1f} mJ ({s['lamsc']['compute_j'] * 1e3:.1f} compute + "
                  f"{s['lamsc']['radio_j'] * 1e3:.2f} radio), JPEG at the same PSNR {s['jpeg']['total_j'] * 1e3:.1f} mJ; "
                  f"files: {result['files']['json']}, {result['files']['png']}")
