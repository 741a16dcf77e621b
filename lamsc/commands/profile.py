"""``lamsc profile``: latency and energy per transmitted image, lamsc beside quality-matched JPEG."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from lamsc.commands.output import IMAGES_HELP, console, emit_json, number, print_table, progress
from lamsc.runtime.energy import METERS
from lamsc.runtime.profiler import ProfileConfig, profile_link
from lamsc.runtime.radio import RADIOS
from lamsc.semcom.channels import CHANNELS
from lamsc.semcom.entropy import DEFAULT_STEP


def profile(
    source: Optional[Path] = typer.Argument(None, help="A bundle folder (from lamsc export) or a model "
                                            "checkpoint; default: the shipped model."),
    images: Optional[list[Path]] = typer.Option(None, help=f"{IMAGES_HELP} Default: all the bundled "
                                                 "ones."),
    backend: Optional[str] = typer.Option(None, help="torch | onnxruntime | tensorrt; default: onnxruntime for "
                                          "a bundle, torch for a checkpoint."),
    energy: str = typer.Option("auto", help=f"Energy meter: {' | '.join(METERS)}."),
    radio: str = typer.Option("wifi", help=f"Radio preset: {' | '.join(RADIOS)}."),
    device_profile: str = typer.Option("cpu", help="Device whose declared power the model meter uses "
                                       "(cpu, orin-nano, orin-nx, agx-orin, xavier-nx)."),
    snr: float = typer.Option(10.0, help="Channel SNR in dB."),
    channel: str = typer.Option("awgn", help=f"One of {', '.join(CHANNELS)}."),
    sam_checkpoint: Optional[Path] = typer.Option(None, "--checkpoint",
                                                  help="SAM/MobileSAM checkpoint for the SKB of a model file "
                                                  "(default: the fallback; a bundle carries its own)."),
    repeats: int = typer.Option(5, min=1, help="Timed runs per image after one warm-up run."),
    out: Path = typer.Option(Path("lamsc-out/profile"), help="Folder for profile.json and energy.png."),
    kb: Optional[list[Path]] = typer.Option(None, "--kb", help="Knowledge base folder the receiver retrieves from "
                                            "(repeatable); its time is part of rx ms."),
    step: float = typer.Option(DEFAULT_STEP, help="The digital mode's quantiser step over a digital radio "
                               "(relative to unit feature power; smaller is more bits and quality)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of tables."),
) -> None:
    """Profile bits, quality, per-stage latency (median/p90/p99) and energy per transmitted image. Over a
    digital radio lamsc sends in its digital mode where the model or bundle has an entropy model."""
    config = ProfileConfig(source, backend, images, energy, radio, device_profile, snr, channel, sam_checkpoint,
                           repeats, out, kb, step)
    with progress() as bar:
        result = profile_link(config, bar.track).to_dict()
    if json_out:
        emit_json("profile", result)
        return
    report(result)


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
                      f"{o['latency']['receive']['median_ms']:.0f}",
                      f"{o['energy']['compute_j'] * 1e3:.0f}{'*' if est else ''}",
                      f"{o['energy']['radio_j'] * 1e3:.2f}",
                      f"{j['bits'] / 1e3:.1f}", f"{j['energy']['total_j'] * 1e3:.1f}")
    print_table(table)
    s = result["summary"]
    console.print("tx ms: segment + encode + pack (median; p90, p99 in the JSON); tx mJ: its compute energy; "
                  "JPEG: quality matched to lamsc's PSNR, encode + radio")
    gpu = [r["lamsc"]["gpu_latency"] for r in result["images"] if r["lamsc"].get("gpu_latency")]
    if gpu:
        medians = ", ".join(f"{k} {sum(g[k]['median_ms'] for g in gpu) / len(gpu):.2f} ms" for k in gpu[0])
        console.print(f"graphs on the GPU by CUDA events (median, mean over images): {medians}")
    console.print(f"lamsc: {result['lamsc_link']}")
    console.print(result["radio"]["rule"])
    console.print(f"compute energy{' (* = estimate)' if est else ''} from {result['energy_meter']['source']}; "
                  f"SKB: {result['segmenter']}")
    console.print(f"mean per image: lamsc {s['lamsc']['total_j'] * 1e3:.1f} mJ "
                  f"({s['lamsc']['compute_j'] * 1e3:.1f} compute + {s['lamsc']['radio_j'] * 1e3:.2f} radio), "
                  f"JPEG at the same PSNR {s['jpeg']['total_j'] * 1e3:.1f} mJ; "
                  f"files: {result['files']['json']}, {result['files']['png']}")
