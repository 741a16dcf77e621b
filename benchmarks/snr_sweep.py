"""PSNR and MS-SSIM against SNR: lamsc (ASC on and off) beside the field's baselines at lamsc's channel uses.

Per photograph and SNR, lamsc sends the image; each baseline (lamsc.semcom.baseline) then gets the channel
uses lamsc spent with ASC on, over the same channel at the same SNR: ``separation`` (the best of JPEG, WebP,
JPEG 2000 and AVIF over 5G LDPC + QAM at the MCS whose measured BLER is <= 1% at ``--design-snr``, default
each SNR itself), ``ideal`` (the same codecs at Shannon capacity), ``softcast`` (analog, LLSE). Links are
compared at equal channel uses; analog links report the side bits they send digitally, digital links the
coded bits at their MCS, in separate columns.

    python benchmarks/snr_sweep.py --out benchmarks/results [--model M] [--images DIR] [--limit N] [--digital STEP]
                                   [--ablation PLAIN_MODEL]

``--digital STEP`` adds lamsc's digital mode ("lamsc-digital": features range-coded at quantiser step STEP
over the same 5G LDPC + QAM link as separation, at the MCS for each SNR), with the entropy model beside the
model (``lamsc density fit``); it spends its own channel uses, reported in its row.

``--ablation PLAIN_MODEL`` adds the plain Deep JSCC ablation ("plain-jscc"): lamsc's own codec trained without
ASI and ASC (``benchmarks/ablation_train.py --variant plain``: no segments, one depth level, 8 channels), every
feature sent, CBR 8/384 = 1/48 plus its header; see benchmarks/results/ablation.md.

Every row also has the importance-weighted PSNR ("PSNR-w", ``lamsc.semcom.metrics.weighted_psnr``), each pixel
weighted by ASI's segment importance map from the --model's ASI on the fallback SKB's segments
(``importance_weights``): the same weights for every link sending that photograph.

Writes snr_sweep.csv (per photograph), snr_sweep.json, snr_sweep.png and snr_sweep.md (the table, the
rules, the SNR where lamsc's PSNR curve crosses each baseline's, and per SNR and link on how many photographs
lamsc is above it) into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lamsc.semcom.baseline import BASELINES, run_baseline
from lamsc.semcom.channels import Channel
from lamsc.semcom.entropy import DigitalMode, load_entropy_model, nearest_step
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.image_codecs import CodecSearch
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.images import NamedImage, bundled_photos, iter_images
from lamsc.semcom.metrics import mean_defined, weighted_psnr
from lamsc.semcom.model import LamscModel, load_model
from lamsc.semcom.separation import SCORING_RULE
from lamsc.semcom.transmission import Receiver, Transmitter, model_inputs, transmit

from provenance import git_revision, processor

SNRS = (0.0, 5.0, 10.0, 15.0, 20.0)
RULES = ("Every link at lamsc's channel uses (complex; CBR = uses / 3HW) and SNR. Analog links (lamsc, softcast) "
         "send values as symbols and their side information (header, depth map, SoftCast's metadata) digitally at "
         "the information rate of the MCS for the SNR (5G LDPC + QAM, BLER <= 1%), counted in the uses: "
         "'side bits'. Digital links send 'coded bits' at the MCS: "
         "separation over 5G LDPC + QAM, ideal at Shannon capacity (no real code, so no coded bits). "
         f"Separation: {SCORING_RULE}.")
ABLATION = "plain-jscc"  # the row of --ablation: lamsc's codec trained without ASI and ASC, every feature sent
# lamsc itself, and lamsc sending everything at about twice its channel uses: no comparison at equal uses
NOT_COMPARED = ("lamsc", "lamsc-no-asc")
WEIGHTED_RULE = ("PSNR-w: PSNR with each pixel's squared error weighted by ASI's segment importance (the mean "
                 "attention weight of the SKB segments covering it, 0 where none does), from the lamsc model's ASI; "
                 "the same weights for every link (lamsc.semcom.metrics.weighted_psnr).")


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snrs", type=float, nargs="+", default=list(SNRS), help="channel SNRs in dB")
    p.add_argument("--design-snr", type=float, default=None,
                   help="SNR the separation link's MCS is chosen for (default: each channel SNR, its best case)")
    p.add_argument("--cbr", type=float, default=None,
                   help="lamsc's channel budget (CBR, side information included); default: ASC's own choice")
    return add_sweep_args(p)


def add_sweep_args(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options every sweep shares: output, model, photographs, baselines, channel, digital mode, threads."""
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--images", type=Path, default=None, help="a folder of photographs (default: the bundled ones)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--baselines", nargs="*", default=["separation", "ideal", "softcast"], choices=list(BASELINES),
                   help="baselines at lamsc's channel uses (none: --baselines alone)")
    p.add_argument("--ablation", type=Path, default=None, metavar="PLAIN_MODEL",
                   help=f"also send with this model, every feature, as {ABLATION!r}: the plain Deep JSCC ablation "
                        "(benchmarks/ablation_train.py --variant plain)")
    p.add_argument("--channel", choices=("awgn", "rayleigh"), default="awgn")
    p.add_argument("--digital", type=float, default=None, metavar="STEP",
                   help="also send in the digital mode at this quantiser step (needs the model's entropy model)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the sweep measures quality, not speed, and one thread is "
                        "fastest on a busy machine)")
    return p


def sweep_inputs(args) -> tuple:
    """What a sweep sends (``--model``, ``--images``, ``--limit``, ``--digital``, ``--ablation``, ``--threads``):
    the model, the photographs, the digital mode (None without ``--digital``), each photograph's codec search,
    the ablation model (None without ``--ablation``) and each photograph's importance weights."""
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    images = (list(iter_images([args.images])) if args.images else bundled_photos())[: args.limit]
    digital = (DigitalMode(load_entropy_model(args.model or DEFAULT_MODEL), nearest_step(args.digital))
               if args.digital is not None else None)
    searches = [CodecSearch(item.pixels) for item in images]  # encodes shared across SNRs and baselines
    ablation = load_model(args.ablation) if args.ablation is not None else None
    weights = [importance_weights(model, FallbackSegmenter(), item.pixels) for item in images]
    return model, images, digital, searches, ablation, weights


def importance_weights(model: LamscModel, segmenter, image: np.ndarray) -> np.ndarray:
    """ASI's segment importance of ``image`` (H, W, 3) uint8: (H, W) float64 in [0, 1], each pixel the mean
    attention weight (``ASI.segment_weights``) of the model's K largest segments of ``segmenter`` covering it, 0
    where none does: ``ASI``'s ``integrated`` map, what training weights the distortion by
    (``lamsc.semcom.training.reconstruction_loss``), and the weights of ``weighted_psnr`` in the sweeps."""
    x, masks = map(torch.from_numpy, model_inputs(image, segmenter.segment(image), model.config.segments))
    with torch.no_grad():
        _, integrated, _ = model.asi(x, masks)
    h, w = image.shape[:2]
    return integrated[0, 0, :h, :w].double().numpy()


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    t0 = time.perf_counter()
    model, images, digital, searches, ablation, weights = sweep_inputs(args)
    segmenter = FallbackSegmenter()
    rows = []
    for snr in args.snrs:
        channel = Channel(args.channel, snr)
        for asc in (True, False):
            tx = Transmitter(model, segmenter, asc=asc, snr_db=snr, cbr=args.cbr if asc else None)
            rx = Receiver(model)
            for k, item in enumerate(images):
                r = transmit(item.pixels, tx, rx, channel, seed=k)
                rows.append(row(snr, item, r, weights[k]))
                if asc:
                    for name in args.baselines:
                        b = run_baseline(name, item.pixels, r.channel_uses, channel, args.design_snr, k, searches[k])
                        rows.append(row(snr, item, b, weights[k]))
        if ablation is not None:
            rows += [row(snr, item, r, w) for item, r, w in zip(images, send_ablation(ablation, segmenter, images,
                                                                                     channel), weights)]
        if digital is not None:
            rows += [row(snr, item, r, w) for item, r, w in zip(images, send_digital(model, segmenter, digital, images,
                                                                                    channel), weights)]
        print(f"{snr:5.1f} dB done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    write_rows(rows, args.out / "snr_sweep.csv")
    table = summarise(rows)
    crossings = crossing_points(table)
    config = provenance(args, model, len(images), time.perf_counter() - t0, ablation)
    config["argv"] = list(sys.argv[1:] if argv is None else argv)
    margins = per_image_margins(rows)
    text = markdown(table, crossings, margins, args, len(images), config)
    (args.out / "snr_sweep.md").write_text(text)
    (args.out / "snr_sweep.json").write_text(json.dumps(
        {"name": "snr_sweep", "config": config, "rules": RULES, "weighted_rule": WEIGHTED_RULE, "results": table,
         "crossings": crossings, "per_image": margins}, indent=2))
    plot(table, args.out / "snr_sweep.png", args)
    print(text)
    return 0


def send_digital(model, segmenter, digital: DigitalMode, images: list, channel: Channel) -> list:
    """Each photograph over ``channel`` in the digital mode, noise seeded by its index: a LinkResult each."""
    tx, rx = Transmitter(model, segmenter, digital=digital), Receiver(model, entropy=digital.entropy)
    return [transmit(item.pixels, tx, rx, channel, seed=k) for k, item in enumerate(images)]


def send_ablation(ablation: LamscModel, segmenter, images: list, channel: Channel) -> list:
    """Each photograph over ``channel`` by the ablation model with every feature sent (ASC off), encoded for the
    channel's SNR, noise seeded by its index as lamsc's: a LinkResult each, named ``ABLATION``."""
    tx, rx = Transmitter(ablation, segmenter, asc=False, snr_db=channel.snr_db), Receiver(ablation)
    out = [transmit(item.pixels, tx, rx, channel, seed=k) for k, item in enumerate(images)]
    for r in out:
        r.name = ABLATION
    return out


def write_rows(rows: list[dict], path: Path) -> None:
    """The per-photograph rows as CSV at ``path`` (its folder made if needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def row(snr: float, item: NamedImage, r, weight: np.ndarray) -> dict:
    """One CSV row: photograph ``item`` sent over one link (LinkResult ``r``) at ``snr``; ``psnr_w`` weighted by
    ``weight`` (``importance_weights``)."""
    rec = r.reconstruction
    return {"snr_db": snr, "image": item.name, "link": r.name, "kind": r.link, "channel_uses": r.channel_uses,
            "cbr": r.cbr, "side_bits": r.side_bits if r.link == "analog" else "",
            "coded_bits": r.coded_bits if r.link == "digital" else "", "mcs": r.mcs, "kept": r.kept_ratio,
            "psnr": r.psnr, "psnr_w": float(weighted_psnr(item.pixels, rec.image, weight)), "ssim": r.ssim,
            "ms_ssim": r.ms_ssim, "lost": rec.lost, "reason": rec.reason, "detail": r.detail}


def link_order(link: str) -> tuple:
    """Sort key of a table's links: lamsc's rows, then the ablation, then the baselines."""
    return (not link.startswith("lamsc"), link != ABLATION, link)


def summarise(rows: list[dict]) -> list[dict]:
    """Means over images per (SNR, link); side bits only for analog links, coded bits only for digital ones."""
    out = []
    for snr in sorted({r["snr_db"] for r in rows}):
        links = sorted(dict.fromkeys(r["link"] for r in rows if r["snr_db"] == snr), key=link_order)
        for link in links:
            sel = [r for r in rows if r["snr_db"] == snr and r["link"] == link]
            kind = sel[0]["kind"]
            bits_key = "side_bits" if kind == "analog" else "coded_bits"
            out.append({"snr_db": snr, "link": link, "kind": kind, "images": len(sel),
                        "channel_uses": float(np.mean([r["channel_uses"] for r in sel])),
                        "cbr": float(np.mean([r["cbr"] for r in sel])),
                        bits_key: float(np.mean([r[bits_key] for r in sel])),
                        "psnr": float(np.mean([r["psnr"] for r in sel])),
                        "psnr_w": mean_defined(r["psnr_w"] for r in sel),
                        "ms_ssim": mean_defined(np.nan if r["ms_ssim"] is None else r["ms_ssim"] for r in sel),
                        "lost": int(sum(r["lost"] for r in sel)),
                        "why_lost": sorted({r["reason"] for r in sel if r["lost"]})})
    return out


def crossing_points(table: list[dict]) -> dict:
    """Per baseline, the SNRs (dB, linear between grid points) where lamsc's mean PSNR minus the baseline's
    changes sign; "above"/"below" when it never does."""
    def curve(link):
        return {t["snr_db"]: t["psnr"] for t in table if t["link"] == link}

    ours = curve("lamsc")
    out = {}
    for link in dict.fromkeys(t["link"] for t in table if t["link"] not in NOT_COMPARED):
        theirs = curve(link)
        snrs = sorted(set(ours) & set(theirs))
        d = [ours[s] - theirs[s] for s in snrs]
        found = [round(a + (b - a) * d0 / (d0 - d1), 2) for a, b, d0, d1 in zip(snrs, snrs[1:], d, d[1:])
                 if d0 * d1 < 0]
        out[link] = found or ("lamsc above everywhere" if all(x > 0 for x in d) else
                              "lamsc below everywhere" if all(x < 0 for x in d) else "touching")
    return out


def per_image_margins(rows: list[dict]) -> list[dict]:
    """Per (SNR, other link), photograph by photograph: on how many photographs lamsc's PSNR is above the
    link's, the median of lamsc's PSNR minus the link's (dB), and the photograph where it is lowest. A mean
    over photographs can hang on one of them (a large flat picture that a codec sends at 40 dB); these say
    whether it does."""
    out = []
    for snr in sorted({r["snr_db"] for r in rows}):
        ours = {r["image"]: r["psnr"] for r in rows if r["snr_db"] == snr and r["link"] == "lamsc"}
        links = sorted({r["link"] for r in rows if r["snr_db"] == snr} - set(NOT_COMPARED), key=link_order)
        for link in links:
            gap = {r["image"]: ours[r["image"]] - r["psnr"] for r in rows
                   if r["snr_db"] == snr and r["link"] == link and r["image"] in ours}
            if not gap:
                continue
            worst = min(gap, key=gap.get)
            out.append({"snr_db": snr, "link": link, "images": len(gap), "above": sum(g > 0 for g in gap.values()),
                        "median_db": float(np.median(list(gap.values()))), "worst": worst,
                        "worst_db": gap[worst]})
    return out


def markdown(table: list[dict], crossings: dict, margins: list[dict], args, n_images: int, config: dict) -> str:
    command = " ".join(["python benchmarks/snr_sweep.py", *config["argv"]])
    lines = ["# lamsc against the separation, ideal and SoftCast baselines at equal channel uses", "",
             f"`{command}` (git {config['git']}, {config['machine']}, {config['seconds']:.0f} s): model "
             f"{config['model'].get('preset', '')} ({config['model'].get('images', '?')} training images), the "
             "weight-free fallback segmenter, channel noise seeded by the image's index. "
             f"Plot: [snr_sweep.png](snr_sweep.png); per image: [snr_sweep.csv](snr_sweep.csv).", "",
             f"SNR sweep on {args.channel}, {n_images} images, means over images; separation's MCS chosen for "
             + (f"{args.design_snr:g} dB." if args.design_snr is not None else "each channel SNR."), "", RULES, "",
             WEIGHTED_RULE + (f" {ABLATION}: {ablation_line(config)}" if config.get("ablation") else ""), "",
             "| SNR dB | link | kind | channel uses | CBR | side bits (analog) | coded bits (digital) | PSNR dB | "
             "PSNR-w dB | MS-SSIM | lost | why lost |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        side = f"{t['side_bits']:.0f}" if "side_bits" in t else ""
        coded = f"{t['coded_bits']:.0f}" if "coded_bits" in t else ""
        lines.append(f"| {t['snr_db']:g} | {t['link']} | {t['kind']} | {t['channel_uses']:.0f} | {t['cbr']:.4f} | "
                     f"{side} | {coded} | {t['psnr']:.2f} | {t['psnr_w']:.2f} | {t['ms_ssim']:.3f} | "
                     f"{t['lost']}/{t['images']} | {'; '.join(t['why_lost'])} |")
    lines += ["", "Where lamsc's PSNR curve crosses each baseline's (SNR, dB):", ""]
    lines += [f"- {link}: {', '.join(map(str, c)) if isinstance(c, list) else c}" for link, c in crossings.items()]
    lines += ["", "Photograph by photograph, lamsc's PSNR minus each link's:", "",
              "| SNR dB | link | lamsc above on | median dB | lowest: photograph, dB |", "|---|---|---|---|---|"]
    lines += [f"| {m['snr_db']:g} | {m['link']} | {m['above']}/{m['images']} | {m['median_db']:+.2f} | "
              f"{m['worst']}, {m['worst_db']:+.2f} |" for m in margins]
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    cbr = np.mean([t["cbr"] for t in table if t["link"] == "lamsc"])
    for link in dict.fromkeys(t["link"] for t in table):
        sel = [t for t in table if t["link"] == link]
        style = "o-" if link.startswith("lamsc") else "^-" if link == ABLATION else "s--"
        label = f"{link} ({sel[0]['kind']}, CBR {np.mean([t['cbr'] for t in sel]):.4f})"
        a1.plot([t["snr_db"] for t in sel], [t["psnr"] for t in sel], style, label=label)
        a2.plot([t["snr_db"] for t in sel], [t["ms_ssim"] for t in sel], style, label=label)
    a1.set(xlabel=f"SNR (dB), {args.channel}", ylabel="PSNR (dB)",
           title=f"PSNR at lamsc's channel uses (CBR {cbr:.4f})")
    a2.set(xlabel=f"SNR (dB), {args.channel}", ylabel="MS-SSIM", title="MS-SSIM at the same channel uses")
    a1.legend(fontsize=8)
    for a in (a1, a2):
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def provenance(args, model, n_images: int, seconds: float, ablation: LamscModel | None = None) -> dict:
    rev = git_revision()
    out = {"git": rev, "machine": processor(), "images": n_images,
           "model": model.config.trained, "snrs": args.snrs, "channel": args.channel, "design_snr": args.design_snr,
           "baselines": args.baselines, "seconds": round(seconds, 1)}
    if ablation is not None:
        c = ablation.config
        out["ablation"] = {"channels": c.channels, "segments": c.segments, "num_levels": c.num_levels,
                           "trained": c.trained}
    return out


def ablation_line(config: dict) -> str:
    """What the ablation row sent, from the provenance: its channels, segments and levels, and its training."""
    a = config["ablation"]
    steps = a["trained"].get("recipe", {}).get("steps", {})
    return (f"lamsc's codec with {a['channels']} channels, {a['segments']} segments into ASI and {a['num_levels']} "
            f"ASC depth level(s), every feature sent; trained {', '.join(f'{k} {v}' for k, v in steps.items())} steps "
            f"on {a['trained'].get('images', '?')} images.")


if __name__ == "__main__":
    sys.exit(main())
