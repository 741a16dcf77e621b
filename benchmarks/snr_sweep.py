"""PSNR against SNR and against bits: lamsc (ASC on and off) beside JPEG/WebP over 5G LDPC + QAM.

The baseline's MCS is chosen once, for ``--design-snr``, as a deployed link would be; the sweep then
shows its cliff below that SNR, while the JSCC codec degrades gracefully.

    python benchmarks/snr_sweep.py --out benchmarks/results [--model M] [--images DIR] [--limit N]

Writes snr_sweep.csv, snr_sweep.png and snr_sweep.md (the table) into --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

from lamsc.semcom.baseline import separation_baseline
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos, iter_images
from lamsc.semcom.model import load_model
from lamsc.semcom.transmission import Receiver, Transmitter, transmit

SNRS = (0.0, 2.5, 5.0, 7.5, 10.0, 12.5, 15.0, 17.5, 20.0)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    p.add_argument("--images", type=Path, default=None, help="default: the bundled photographs")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--design-snr", type=float, default=10.0, help="SNR the baseline's MCS is chosen for")
    p.add_argument("--codec", choices=("jpeg", "webp"), default="webp")
    p.add_argument("--channel", choices=("awgn", "rayleigh"), default="awgn")
    return p


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    model = load_model(args.model)
    images = list(iter_images([args.images])) if args.images else bundled_photos()
    images = images[: args.limit]
    segmenter = FallbackSegmenter()
    rows = []
    for snr in SNRS:
        channel = Channel(args.channel, snr)
        for asc in (True, False):
            tx, rx = Transmitter(model, segmenter, asc=asc, snr_db=snr), Receiver(model)
            for k, item in enumerate(images):
                r = transmit(item.pixels, tx, rx, channel, seed=k)
                rows.append(_row(snr, item.name, r))
                if asc:  # the baseline gets the channel uses lamsc spent with ASC on
                    b = separation_baseline(item.pixels, r.channel_uses, channel, args.design_snr, args.codec, k)
                    rows.append(_row(snr, item.name, b))
        print(f"{snr:5.1f} dB done", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "snr_sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = summarise(rows)
    (args.out / "snr_sweep.md").write_text(markdown(table, args))
    (args.out / "snr_sweep.json").write_text(json.dumps({"name": "snr_sweep", "config": _provenance(args, model),
                                                          "results": table}, indent=2))
    plot(table, args.out / "snr_sweep.png", args)
    print(markdown(table, args))
    return 0


def _row(snr, image, r) -> dict:
    return {"snr_db": snr, "image": image, "link": r.name, "bits": r.bits, "channel_uses": r.channel_uses,
            "cbr": r.cbr, "kept": r.kept_ratio, "psnr": r.psnr, "ssim": r.ssim, "ms_ssim": r.ms_ssim,
            "lost": r.reconstruction.lost}


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for snr in sorted({r["snr_db"] for r in rows}):
        for link in sorted({r["link"] for r in rows if r["snr_db"] == snr}):
            sel = [r for r in rows if r["snr_db"] == snr and r["link"] == link]
            out.append({"snr_db": snr, "link": link, "images": len(sel),
                        **{k: float(np.mean([r[k] for r in sel])) for k in ("bits", "cbr", "kept", "psnr", "ssim")},
                        "ms_ssim": float(np.nanmean([r["ms_ssim"] for r in sel])),
                        "lost": int(sum(r["lost"] for r in sel))})
    return out


def markdown(table: list[dict], args) -> str:
    lines = [f"SNR sweep on {args.channel}; baseline MCS designed for {args.design_snr:g} dB; means over images.", "",
             "| SNR dB | link | bits | CBR | kept | PSNR dB | SSIM | MS-SSIM | lost |", "|---|---|---|---|---|---|---|---|---|"]
    for t in table:
        lines.append(f"| {t['snr_db']:g} | {t['link']} | {t['bits']:.0f} | {t['cbr']:.4f} | {t['kept']:.2f} | "
                     f"{t['psnr']:.2f} | {t['ssim']:.3f} | {t['ms_ssim']:.3f} | {t['lost']}/{t['images']} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for link in sorted({t["link"] for t in table}):
        sel = [t for t in table if t["link"] == link]
        a1.plot([t["snr_db"] for t in sel], [t["psnr"] for t in sel], "o-", label=link)
        a2.plot([t["bits"] / 1000 for t in sel], [t["psnr"] for t in sel], "o", label=link)
    a1.set(xlabel=f"SNR (dB), {args.channel}", ylabel="PSNR (dB)", title="quality against channel SNR")
    a2.set(xlabel="payload kbits", ylabel="PSNR (dB)", title="quality against bits sent")
    a1.legend(fontsize=8)
    a1.grid(alpha=0.3)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _provenance(args, model) -> dict:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rev = ""
    return {"git": rev, "machine": platform.machine(), "processor": platform.processor(),
            "model": model.config.trained, "design_snr": args.design_snr, "codec": args.codec}


if __name__ == "__main__":
    sys.exit(main())
