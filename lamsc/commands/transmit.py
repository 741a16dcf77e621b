"""``lamsc transmit``: images across a simulated link, with what arrived measured against what was sent."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from PIL import Image, ImageDraw
from rich.markup import escape
from rich.table import Table

from lamsc.commands.output import IMAGES_HELP, console, emit_json, number, print_table, progress
from lamsc.retrieval.refine import Retriever
from lamsc.semcom import metrics
from lamsc.semcom.baseline import BASELINES, run_baseline
from lamsc.semcom.channels import CHANNELS, Channel
from lamsc.semcom.image_codecs import CodecSearch
from lamsc.semcom.images import NamedImage, iter_images
from lamsc.runtime.backends import BACKENDS, is_bundle
from lamsc.runtime.deployment import Deployment, check_source
from lamsc.errors import UserError
from lamsc.semcom.backend import Backend
from lamsc.semcom.entropy import DEFAULT_STEP, DigitalMode, nearest_step
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.mcs import MCS_TABLE
from lamsc.semcom.model import LamscModel, load_model
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.overlay import save_png
from lamsc.semcom.separation import SCORING_RULE
from lamsc.semcom.transmission import LinkResult, Receiver, Transmitter, transmit as transmit_one


def transmit(
    images: list[Path] = typer.Argument(..., help=IMAGES_HELP),
    snr: float = typer.Option(10.0, help="Channel SNR in dB."),
    channel: str = typer.Option("awgn", help=f"One of {', '.join(CHANNELS)}."),
    model: Optional[Path] = typer.Option(None, help="lamsc model (.safetensors with .json) or an exported bundle "
                                         "folder; default: the shipped model."),
    backend: Optional[str] = typer.Option(None, help="For a bundle: onnxruntime (default) | tensorrt; a model "
                                          "file runs on torch."),
    checkpoint: Optional[Path] = typer.Option(None, help="SAM/MobileSAM checkpoint for the SKB (default: fallback)."),
    no_asc: bool = typer.Option(False, "--no-asc", help="Send every feature (adaptive compression off)."),
    cbr: Optional[float] = typer.Option(None, help="Channel budget: the most complex channel uses per source "
                                        "dimension (3HW), side information included; ASC fits what it sends to it."),
    baseline: Optional[list[str]] = typer.Option(
        None, metavar="NAME", help="Also send each image by a baseline at lamsc's channel uses; repeat for several. "
        "separation: the best of JPEG/WebP/JPEG 2000/AVIF over 5G LDPC + QAM; jpeg, webp, jpeg2000, avif: one "
        "codec over the same link; ideal: the codecs at Shannon capacity; softcast: SoftCast (analog); "
        "all: separation, ideal and softcast."),
    design_snr: Optional[float] = typer.Option(None, help="SNR in dB a separation baseline's MCS is chosen for "
                                               "(default: --snr)."),
    digital: bool = typer.Option(False, "--digital", help="The digital mode: features quantised at --step, "
                                 "range-coded under the model's entropy model (lamsc density fit), sent over 5G LDPC "
                                 "+ QAM at the MCS for --snr."),
    step: Optional[float] = typer.Option(None, help="The digital mode's quantiser step, relative to unit feature "
                                         f"power (the nearest of lamsc.semcom.entropy.STEPS; default {DEFAULT_STEP:g}):"
                                         " smaller is more bits and quality."),
    kept: Optional[float] = typer.Option(None, help="The digital mode's fraction of feature values sent, in (0, 1], "
                                         "at least one ASC level per position (default: the one the entropy model "
                                         "was fitted with for the step, else ASC's own choice)."),
    seed: int = typer.Option(0, help="Seed of the channel noise."),
    kb: Optional[list[Path]] = typer.Option(None, "--kb", help="Knowledge base folder the receiver retrieves from "
                                            "(repeatable: local and global)."),
    out: Path = typer.Option(Path("lamsc-out/transmit"), help="Folder for side-by-side PNGs."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON on stdout instead of the table."),
) -> None:
    """Transmit images over a noisy channel; report bits, channel uses, CBR, PSNR/SSIM/MS-SSIM, task outputs."""
    ch = Channel(channel, snr)
    baselines = baseline_names(baseline or [])
    check_source(model)
    if is_bundle(model):  # the same Transmitter and Receiver, the networks on the bundle's backend
        net, _, segmenter = Deployment(str(model), backend or "onnxruntime",
                                       str(checkpoint) if checkpoint else None).open()
    elif backend is not None and backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)} (all but torch run an "
                        "exported bundle)")
    elif backend not in (None, "torch"):
        raise UserError(f"--backend {backend} runs an exported bundle: give one as --model (`lamsc export` makes "
                        "one), or leave --backend out to run the model file on torch")
    else:
        net, segmenter = load_model(model), build_segmenter(checkpoint)
    retriever = Retriever.open(kb) if kb else None
    if (kept is not None or step is not None) and not digital:
        raise UserError(f"--{'kept' if kept is not None else 'step'} sets the digital mode's "
                        f"{'fraction of features' if kept is not None else 'quantiser step'}: add --digital (an "
                        "analog link's share is set by --cbr)")
    levels = net.config.num_levels
    if digital and kept is not None and 0 < kept < 1 / levels:  # outside (0, 1] DigitalMode refuses it
        console.print(f"note: kept fraction {kept:g} -> {1 / levels:g}, one ASC level of {levels} per position")
    if digital and snr < MCS_TABLE[0].threshold_db:
        console.print(f"note: no MCS reaches a BLER of 1% at {snr:g} dB (the most robust, {MCS_TABLE[0].name}, "
                      f"needs {MCS_TABLE[0].threshold_db:g} dB): the payload goes at it and is likely lost")
    if digital and ch.name.startswith("rayleigh"):
        console.print("note: the MCS is chosen by its BLER measured on AWGN; over Rayleigh fading its blocks fail "
                      "more often")
    mode = digital_mode(model, DEFAULT_STEP if step is None else step, kept) if digital else None
    photos = list(iter_images(images, bundled_names=True))
    rows = run_link(photos, net, segmenter, ch, not no_asc, baselines, design_snr, seed, out, retriever, cbr, mode)
    report(rows, net.config, segmenter, ch, json_out, mode, model)


def digital_mode(model: Path | None, step: float, kept: float | None = None) -> DigitalMode:
    """The digital mode at the step of STEPS nearest ``step``, sending a fraction ``kept`` of the features
    (None: the entropy model's for the step), with the entropy model of ``model`` (a bundle's, or the one
    beside a model file; default: the shipped one's); UserError where there is none."""
    entropy = Deployment(str(model) if model is not None else None).entropy_model()
    if entropy is None:
        fix = ("export the bundle from a model with one beside it" if is_bundle(model)
               else f"fit one with `lamsc density fit{f' --model {model}' if model else ''}`")
        raise UserError(f"{model or 'the shipped model'} has no entropy model for the digital mode: {fix}")
    snapped = nearest_step(step)
    if snapped != step:
        console.print(f"note: quantiser step {step:g} -> {snapped:g}, the nearest with probability tables")
    return DigitalMode(entropy, snapped, kept)


def baseline_names(given: list[str]) -> list[str]:
    """The baselines asked for, ``all`` expanded, each once in the order given; BadParameter for an unknown one."""
    names = []
    for name in given:
        for n in (("separation", "ideal", "softcast") if name == "all" else (name,)):
            if n not in BASELINES:
                raise typer.BadParameter(f"unknown baseline {n!r}; choose from all, {', '.join(BASELINES)}",
                                         param_hint="--baseline")
            if n not in names:
                names.append(n)
    return names


def run_link(images: list[NamedImage], net: LamscModel | Backend, segmenter: Segmenter, channel: Channel, asc: bool,
             baselines: list[str], design_snr: float | None, seed: int, out: Path | None,
             retriever: Retriever | None = None, cbr: float | None = None,
             digital: DigitalMode | None = None) -> list[dict]:
    """Each image over ``channel`` through a Transmitter and Receiver on ``net`` (a model or a backend), beside
    the named baselines (lamsc.semcom.baseline.BASELINES) at the channel uses lamsc spent; one summary dict
    per image, pictures in ``out``. With a ``retriever`` the receiver retrieves from its knowledge bases; each
    row then says what it used and the PSNR of the image as decoded before retrieval. ``cbr``: the channel
    budget ASC fits each image to (None: ASC's own choice). ``digital``: send in the digital mode."""
    tx = Transmitter(net, segmenter, asc=asc, snr_db=channel.snr_db, cbr=cbr, digital=digital)
    rx = Receiver(net, refine=retriever, entropy=digital.entropy if digital else None)
    rows = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    with progress() as bar:
        for k, item in enumerate(bar.track(images,
                                           description=f"transmitting over {channel.name} {channel.snr_db:g} dB")):
            ours = transmit_one(item.pixels, tx, rx, channel, seed + k)
            row = {"image": item.name, "lamsc": ours.summary()}
            if retriever is not None and not ours.reconstruction.lost:
                last = retriever.last
                row["kb"] = {"used": last["used"], "agreement": round(last["agreement"], 4),
                             "score": round(last["score"], 4),
                             "psnr_without": round(float(metrics.psnr(item.pixels, last["decoded"])), 5),
                             "retrieved": ours.reconstruction.retrieved,
                             "seconds": {k: round(v, 5) for k, v in last["seconds"].items()}}
            results = [ours]
            if baselines:
                # the same channel uses as ours; a digital channel's modulation is the baseline's own choice
                search = CodecSearch(item.pixels)
                base = [run_baseline(b, item.pixels, ours.channel_uses, channel, design_snr, seed + k, search)
                        for b in baselines]
                row["baselines"] = [b.summary() for b in base]
                results += base
            if ours.reconstruction.class_probs is not None:
                row["class"] = tx.config.classes[int(np.argmax(ours.reconstruction.class_probs))]
            if out is not None:
                stem = out / item.name.replace('/', '_')
                save_png(ours.reconstruction.image, f"{stem}_received.png")
                row["received"] = f"{stem}_received.png"
                row["picture"] = str(side_by_side(item, results, channel, Path(f"{stem}_link.png")))
            rows.append(row)
    return rows


def side_by_side(item: NamedImage, results: list[LinkResult], channel: Channel, path: Path) -> Path:
    """The original beside what each link delivered over ``channel``, each captioned with its PSNR and rate."""
    panels = [(f"original; channel {channel.name} at SNR {channel.snr_db:g} dB", item.pixels)] + [
        (f"{r.name}: PSNR {r.psnr:.1f} dB, CBR {r.cbr:.4f}" + (" LOST" if r.reconstruction.lost else ""),
         r.reconstruction.image) for r in results]
    h, w = item.pixels.shape[:2]
    sheet = Image.new("RGB", (w * len(panels), h + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (caption, pixels) in enumerate(panels):
        sheet.paste(Image.fromarray(pixels), (i * w, 20))
        draw.text((i * w + 4, 4), caption, fill="black")
    return save_png(sheet, path)


def report(rows: list[dict], config: ModelConfig, segmenter: Segmenter, channel: Channel, json_out: bool,
           digital: DigitalMode | None = None, model: Path | None = None) -> None:
    has_baseline = any(row.get("baselines") for row in rows)
    if json_out:
        doc = {"channel": channel.name, "snr_db": channel.snr_db, "segmenter": segmenter.name,
               "model": {"path": str(model) if model is not None else "shipped default", "trained": config.last_run},
               "images": rows}
        if digital is not None:
            doc["digital"] = {"step": digital.step, "kept": digital.kept_fraction, "kept_from": kept_source(digital)}
        if has_baseline:
            doc["rules"] = {"link": WHAT_CROSSES, "separation": SCORING_RULE}
        emit_json("transmit", doc)
        return
    table = Table(title=f"{channel.name} at {channel.snr_db:g} dB — SKB: {segmenter.name}")
    kb = any("kb" in row for row in rows)
    for col in ("image", "link", "uses", "CBR", "analog: side bits", "digital: coded bits @ MCS", "kept", "PSNR",
                "SSIM", "MS-SSIM", "lost") + (("PSNR no KB", "KB label") if kb else ()):
        table.add_column(col, justify="left" if col in ("image", "link", "lost") else "right")
    for row in rows:
        for r in [row["lamsc"], *row.get("baselines", [])]:
            analog = r["link"] == "analog"
            coded = f"{r['coded_bits']} @ {r['mcs']}" if r["coded_bits"] else r["mcs"]
            k = row.get("kb") if r is row["lamsc"] else None  # retrieval acts on lamsc's receiver only
            extra = [number(k["psnr_without"], ".2f") if k else "", escape((k["retrieved"] or {}).get("label", ""))
                     if k else ""] if kb else []
            table.add_row(row["image"], escape(r["name"]), str(r["channel_uses"]), f"{r['cbr']:.4f}",
                          str(r["side_bits"]) if analog else "", "" if analog else escape(coded),
                          f"{r['kept_ratio']:.2f}", number(r["psnr"], ".2f"), number(r["ssim"], ".3f"),
                          number(r["ms_ssim"], ".3f"), escape(r["reason"]) if r["lost"] else "", *extra)
    print_table(table, width=140)
    console.print(f"SKB: {segmenter.name}")
    if digital is not None:
        kept = "" if digital.kept_fraction is None else f" {digital.kept_fraction:g}"
        console.print(f"digital mode: quantiser step {digital.step:g}, kept fraction{kept} ({kept_source(digital)})")
    console.print(WHAT_CROSSES)
    if has_baseline:
        console.print(f"separation: {SCORING_RULE}")
    pictures = [row["picture"] for row in rows if "picture" in row]
    if pictures:
        console.print(f"pictures (original beside what arrived): {Path(pictures[0]).parent}/*_link.png")


def kept_source(digital: DigitalMode) -> str:
    """Where the digital mode's kept fraction comes from, in words."""
    if digital.kept is not None:
        return "as asked"
    if digital.kept_fraction is not None:
        return "fitted for this step by lamsc density fit"
    return "ASC's own choice: the density holds no fitted fraction"


WHAT_CROSSES = ("every link is compared at its complex channel uses (CBR = uses / 3HW); analog links also send "
                "side bits (header, depth map, metadata) digitally at the MCS for the SNR, digital links send "
                "coded bits at their MCS")
