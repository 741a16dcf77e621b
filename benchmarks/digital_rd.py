"""Rate-distortion of lamsc's digital mode against JPEG: PSNR vs bits per pixel on an error-free link, and BD-rate.

Per photograph and quantiser step Δ, the digital mode's payload (header, depth map, range-coded features,
CRC) is decoded as it was sent (no channel: the rate-distortion of the source code alone); bits per pixel
= 8 x payload bytes / (H W). JPEG (Pillow, optimised Huffman tables, 4:2:0) at qualities 1..95 is the anchor;
"JPEG at the same bpp" is the best JPEG file no larger than the payload (downscaled when needed). BD-rate
(lamsc.semcom.metrics.bd_rate, VCEG-M33 cubic fit) of the digital mode against JPEG per photograph, over the
PSNR range both cover; negative means fewer bits than JPEG at the same PSNR.

The entropy model: the one beside --model when there is one (or --density); otherwise fitted here, two-fold:
on one half of the photographs for the other half, so no photograph is coded with a density fitted on it.

    python benchmarks/digital_rd.py --out benchmarks/results [--model M] [--density D] [--limit N]

Writes digital_rd.csv (per photograph and point), digital_rd.json, digital_rd.png and digital_rd.md into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lamsc.semcom import metrics
from lamsc.semcom.entropy import STEPS, DigitalMode, EntropyModel, density_path, effective_snr
from lamsc.semcom.entropy_fit import fit_entropy_model
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.image_codecs import CodecSearch, decode, encode
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.model import LamscModel
from lamsc.semcom.transmission import Receiver, Transmitter

from provenance import git_revision, processor

SWEEP = STEPS[4::2]  # Δ = 1/8 .. 2, a factor sqrt(2) apart
JPEG_QUALITIES = (1, 2, 3, 4, *range(5, 96, 5))  # the lowest ones reach down to where the model's PSNR tops out


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--density", type=Path, default=None, help="entropy model file (default: beside the model, "
                   "else fitted here two-fold)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N bundled photographs")
    p.add_argument("--fit-steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=1)
    return p


def entropy_models(args, model: LamscModel, base: Path, photos) -> tuple[list[EntropyModel], str]:
    """One entropy model per photograph, and how they were obtained."""
    path = args.density or density_path(base)
    if Path(path).is_file():
        em = EntropyModel.load(path)
        shown = Path(path).resolve()
        root = Path(__file__).resolve().parents[1]
        shown = shown.relative_to(root) if shown.is_relative_to(root) else shown  # no build-machine paths in notes
        return [em] * len(photos), f"the density file {shown}"
    segmenter, halves = FallbackSegmenter(), (photos[0::2], photos[1::2])
    fitted = [fit_entropy_model(model, [p.pixels for p in half], segmenter, steps=args.fit_steps) for half in halves]
    # photograph i is coded with the density fitted on the other half
    return [fitted[1 - i % 2] for i in range(len(photos))], (
        f"fitted here two-fold ({args.fit_steps} steps each; even-indexed photographs coded with the density "
        "of the odd-indexed ones and the reverse)")


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    base = (args.model or DEFAULT_MODEL).with_suffix("")
    model = LamscModel.load(base)
    photos = bundled_photos()[: args.limit]
    ems, how = entropy_models(args, model, base, photos)
    print(f"entropy models: {how} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    segmenter, rows, bd = FallbackSegmenter(), [], {}
    for item, em in zip(photos, ems):
        image, (h, w) = item.pixels, item.pixels.shape[:2]
        rx, search = Receiver(model, entropy=em), CodecSearch(image)
        ours, jpeg = [], []
        for step in SWEEP:
            sent = Transmitter(model, segmenter, digital=DigitalMode(em, step)).send(image)
            payload = sent.payload
            rec = rx.receive(payload, h, w)
            same = search.best(len(payload), ("jpeg",))
            ours.append((8 * len(payload) / (h * w), float(metrics.psnr(image, rec.image))))
            rows.append({"image": item.name, "link": "lamsc-digital", "setting": step, "bpp": ours[-1][0],
                         "psnr": ours[-1][1], "ms_ssim": float(metrics.ms_ssim(image, rec.image)),
                         "effective_snr_db": effective_snr(step, model.config.snr_range), "kept": sent.kept_ratio,
                         "jpeg_same_bpp_psnr": same.psnr if same is not None else float("nan"),
                         "jpeg_same_bpp": 8 * len(same.data) / (h * w) if same is not None else float("nan")})
        for q in JPEG_QUALITIES:
            data = encode(image, "jpeg", q)
            shown = decode(data, "jpeg", h, w)
            jpeg.append((8 * len(data) / (h * w), float(metrics.psnr(image, shown))))
            rows.append({"image": item.name, "link": "jpeg", "setting": q, "bpp": jpeg[-1][0], "psnr": jpeg[-1][1],
                         "ms_ssim": float(metrics.ms_ssim(image, shown)), "effective_snr_db": "", "kept": "",
                         "jpeg_same_bpp_psnr": "", "jpeg_same_bpp": ""})
        (jr, jp), (orr, op) = zip(*jpeg), zip(*ours)
        bd[item.name] = {"bd_rate_percent": metrics.bd_rate(jr, jp, orr, op),
                         "common_psnr_db": [max(min(jp), min(op)), min(max(jp), max(op))]}
        print(f"{item.name}: BD-rate {bd[item.name]['bd_rate_percent']:+.1f}% ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "digital_rd.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pooled = mean_curves_bd(rows)
    config = provenance(model, args.model, len(photos), how, time.perf_counter() - t0)
    config["argv"] = list(sys.argv[1:] if argv is None else argv)
    (args.out / "digital_rd.json").write_text(json.dumps(metrics.strict_json(
        {"name": "digital_rd", "config": config, "bd_rate": bd, "bd_rate_mean_curves": pooled, "rows": rows}),
        indent=1))
    plot(rows, args.out / "digital_rd.png")
    (args.out / "digital_rd.md").write_text(markdown(rows, bd, pooled, config))
    return 0


def mean_curve(rows, link: str) -> list[tuple]:
    """(setting, mean bpp, mean PSNR, mean JPEG-at-same-bpp PSNR) per setting of ``link``, over photographs."""
    settings = sorted({r["setting"] for r in rows if r["link"] == link})
    out = []
    for s in settings:
        sel = [r for r in rows if r["link"] == link and r["setting"] == s]
        same = [r["jpeg_same_bpp_psnr"] for r in sel if isinstance(r["jpeg_same_bpp_psnr"], float)]
        out.append((s, np.mean([r["bpp"] for r in sel]), np.mean([r["psnr"] for r in sel]),
                    metrics.mean_defined(same) if same else float("nan")))
    return out


def mean_curves_bd(rows) -> dict:
    """BD-rate between the mean curves over photographs (mean bpp and mean PSNR per setting): the one figure
    the field quotes for a dataset, such as Kodak's."""
    (_, jr, jp, _), (_, orr, op, _) = (zip(*mean_curve(rows, link)) for link in ("jpeg", "lamsc-digital"))
    return {"bd_rate_percent": metrics.bd_rate(jr, jp, orr, op),
            "common_psnr_db": [max(min(jp), min(op)), min(max(jp), max(op))]}


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for link, colour in (("lamsc-digital", "tab:blue"), ("jpeg", "tab:orange")):
        for name in sorted({r["image"] for r in rows}):
            sel = [r for r in rows if r["link"] == link and r["image"] == name]
            ax.plot([r["bpp"] for r in sel], [r["psnr"] for r in sel], color=colour, alpha=0.2, lw=0.8)
        curve = mean_curve(rows, link)
        ax.plot([c[1] for c in curve], [c[2] for c in curve], "o-", color=colour, lw=2,
                label=f"{link} (mean over photographs)")
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel (payload or file)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title("Digital mode vs JPEG, error-free link (thin: each photograph)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(rows, bd: dict, pooled: dict, config: dict) -> str:
    finite = [v["bd_rate_percent"] for v in bd.values() if math.isfinite(v["bd_rate_percent"])]
    lines = ["# Digital mode vs JPEG: rate-distortion on an error-free link", "",
             "Generated by `python benchmarks/digital_rd.py " + " ".join(config["argv"]) + "` "
             f"(git {config['git']}, {config['machine']}, {config['seconds']} s). Model: {config['model_file']}. "
             f"Entropy models: {config['entropy']}.", "",
             "Digital mode: kept features at unit power quantised at step Δ, range-coded under the learned "
             "density's table for each value's context (its causal neighbours' binned mean); bpp = 8 x "
             "payload bytes (header, depth map, coded values, CRC) / pixels. The "
             "decoder is told the quantisation noise's SNR, 10 log10(12/Δ²) clipped to the model's range. "
             "Kept: the fraction of feature values sent (the entropy model's fitted fraction for the step, or "
             "ASC's own choice where it has none). JPEG at the same bpp: the best JPEG file no larger than the "
             "payload.", "",
             "| Δ | effective SNR (dB) | kept | mean bpp | mean PSNR (dB) | JPEG at the same bpp: mean PSNR (dB) |",
             "|---|---|---|---|---|---|"]
    ours = [r for r in rows if r["link"] == "lamsc-digital"]
    snr = {r["setting"]: r["effective_snr_db"] for r in ours}
    for s, bpp, p, same in mean_curve(rows, "lamsc-digital"):
        kept = np.mean([r["kept"] for r in ours if r["setting"] == s])
        lines.append(f"| {s:g} | {snr[s]:.1f} | {kept:.2f} | {bpp:.3f} | {p:.2f} | {same:.2f} |")
    lines += ["", "| JPEG quality | mean bpp | mean PSNR (dB) |", "|---|---|---|"]
    lines += [f"| {s} | {bpp:.3f} | {p:.2f} |" for s, bpp, p, _ in mean_curve(rows, "jpeg")]
    lines += ["", "BD-rate of the digital mode against JPEG (negative: fewer bits at the same PSNR; NaN: the PSNR "
              "ranges do not overlap), over the PSNR range both curves cover (a narrow range makes the cubic fit, "
              "and so the figure, fragile):", "", "| photograph | BD-rate (%) | common PSNR range (dB) |",
              "|---|---|---|"]
    for k, v in bd.items():
        rate, (lo, hi) = v["bd_rate_percent"], v["common_psnr_db"]
        lines.append(f"| {k} | {rate:+.1f} | {lo:.2f} .. {hi:.2f} |" if math.isfinite(rate) else
                     f"| {k} | NaN | none (JPEG {lo:.2f} and up, lamsc up to {hi:.2f}) |")
    if finite:
        lines += ["", f"Mean over {len(finite)} photographs: **{np.mean(finite):+.1f} %** "
                  f"(median {np.median(finite):+.1f} %)."]
    lo, hi = pooled["common_psnr_db"]
    lines += ["", f"Between the mean curves of the two tables above (the way a dataset's single figure is quoted, as "
              f"for Kodak): **{pooled['bd_rate_percent']:+.1f} %** over {lo:.2f} .. {hi:.2f} dB."]
    return "\n".join(lines) + "\n"


def provenance(model: LamscModel, model_file: Path | None, n_images: int, how: str, seconds: float) -> dict:
    rev = git_revision()
    return {"git": rev, "machine": processor(), "images": n_images,
            "model": model.config.trained,
            "model_file": str(model_file) if model_file else "the shipped default (semcom/default_model)",
            "entropy": how, "steps": list(SWEEP), "jpeg_qualities": list(JPEG_QUALITIES), "seconds": round(seconds, 1)}


if __name__ == "__main__":
    sys.exit(main())
