"""PSNR and MS-SSIM against CBR at one SNR: lamsc fitted to each channel budget beside the field's baselines
given the same channel uses.

Per photograph and budget, lamsc sends the image with ASC's depth map shifted to the budget
(``Transmitter(cbr=...)``, side information included); each baseline (lamsc.semcom.baseline) then gets the
channel uses lamsc spent, over the same channel at the same SNR. The codec sends at most every feature
(CBR 1/24 for 16 channels at 1/8 resolution) and at least its first depth level everywhere with the depth map:
budgets outside that range are met as closely as the codec can, and the row says the CBR it reached. With
``--digital STEP`` the digital mode's row is added once (its rate is set by its quantiser step, not a budget);
with ``--ablation PLAIN_MODEL`` the plain Deep JSCC ablation's row ("plain-jscc", every feature sent: CBR 1/48
for 8 channels) is added once. Every row has the importance-weighted PSNR too (snr_sweep's ``WEIGHTED_RULE``).

    python benchmarks/cbr_sweep.py --out benchmarks/results [--snr 10] [--model M] [--images DIR] [--limit N]

Writes cbr_sweep.csv (per photograph), cbr_sweep.json, cbr_sweep.png and cbr_sweep.md into --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from lamsc.semcom.baseline import run_baseline
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.metrics import mean_defined
from lamsc.semcom.transmission import Receiver, Transmitter, transmit

sys.path.insert(0, str(Path(__file__).parent))
from snr_sweep import (ABLATION, RULES, WEIGHTED_RULE, ablation_line, add_sweep_args, link_order,  # noqa: E402
                       provenance, row, send_ablation, send_digital, sweep_inputs, write_rows)  # the SNR sweep's rows

CBRS = (1 / 96, 1 / 64, 1 / 48, 1 / 32, 1 / 24, 1 / 16, 1 / 12)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snr", type=float, default=10.0, help="channel SNR in dB")
    p.add_argument("--cbrs", type=float, nargs="+", default=list(CBRS), help="channel budgets (CBR)")
    return add_sweep_args(p)


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    t0 = time.perf_counter()
    model, images, digital, searches, ablation, weights = sweep_inputs(args)
    segmenter, rx = FallbackSegmenter(), Receiver(model)
    channel = Channel(args.channel, args.snr)
    rows = []
    for budget in args.cbrs:
        tx = Transmitter(model, segmenter, snr_db=args.snr, cbr=budget)
        for k, item in enumerate(images):
            r = transmit(item.pixels, tx, rx, channel, seed=k)
            rows.append({"budget": budget, **row(args.snr, item, r, weights[k])})
            for name in args.baselines:
                b = run_baseline(name, item.pixels, r.channel_uses, channel, None, k, searches[k])
                rows.append({"budget": budget, **row(args.snr, item, b, weights[k])})
        print(f"CBR {budget:.4f} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if ablation is not None:  # its rate is its channel count: one row, whatever the budgets
        rows += [{"budget": None, **row(args.snr, item, r, w)}
                 for item, r, w in zip(images, send_ablation(ablation, segmenter, images, channel), weights)]
    if digital is not None:
        rows += [{"budget": None, **row(args.snr, item, r, w)}
                 for item, r, w in zip(images, send_digital(model, segmenter, digital, images, channel), weights)]
    write_rows(rows, args.out / "cbr_sweep.csv")
    table = summarise(rows)
    config = provenance(argparse.Namespace(snrs=[args.snr], channel=args.channel, design_snr=None,
                                           baselines=args.baselines), model, len(images), time.perf_counter() - t0,
                        ablation)
    config.update(cbrs=args.cbrs, argv=list(sys.argv[1:] if argv is None else argv))
    text = markdown(table, args, len(images), config)
    (args.out / "cbr_sweep.md").write_text(text)
    (args.out / "cbr_sweep.json").write_text(json.dumps(
        {"name": "cbr_sweep", "config": config, "rules": RULES, "weighted_rule": WEIGHTED_RULE, "results": table},
        indent=2))
    plot(table, args.out / "cbr_sweep.png", args)
    print(text)
    return 0


def summarise(rows: list[dict]) -> list[dict]:
    """Means over images per (budget, link): the CBR each link reached, PSNR, MS-SSIM, losses."""
    out = []
    for budget in dict.fromkeys(r["budget"] for r in rows):
        here = [r for r in rows if r["budget"] == budget]
        for link in sorted(dict.fromkeys(r["link"] for r in here), key=link_order):
            sel = [r for r in here if r["link"] == link]
            out.append({"budget": budget, "link": link, "kind": sel[0]["kind"], "images": len(sel),
                        "cbr": float(np.mean([r["cbr"] for r in sel])),
                        "psnr": float(np.mean([r["psnr"] for r in sel])),
                        "psnr_w": mean_defined(r["psnr_w"] for r in sel),
                        "ms_ssim": mean_defined(np.nan if r["ms_ssim"] is None else r["ms_ssim"] for r in sel),
                        "lost": int(sum(r["lost"] for r in sel))})
    return out


def markdown(table: list[dict], args, n_images: int, config: dict) -> str:
    command = " ".join(["python benchmarks/cbr_sweep.py", *config["argv"]])
    lines = ["# lamsc against the baselines across channel budgets", "",
             f"`{command}` (git {config['git']}, {config['machine']}, {config['seconds']:.0f} s): "
             f"{args.channel} at {args.snr:g} dB, {n_images} images, means over images, the weight-free fallback "
             "segmenter, channel noise seeded by the image's index. Plot: [cbr_sweep.png](cbr_sweep.png); per "
             "image: [cbr_sweep.csv](cbr_sweep.csv).", "",
             "lamsc's ASC depth map is shifted to each budget (side information included); the baselines get the "
             "channel uses lamsc spent. Budgets beyond what the codec can send (every feature: CBR 1/24) or below "
             "its floor (the first depth level everywhere) are met as closely as it can: 'CBR' is what each link "
             "spent. " + RULES, "",
             WEIGHTED_RULE + (f" {ABLATION}: {ablation_line(config)}" if config.get("ablation") else ""), "",
             "| budget | link | kind | CBR | PSNR dB | PSNR-w dB | MS-SSIM | lost |",
             "|---|---|---|---|---|---|---|---|"]
    for t in table:
        budget = (f"1/{1 / t['budget']:.0f}" if t["budget"] is not None else
                  "every feature" if t["link"] == ABLATION else "digital step")
        lines.append(f"| {budget} | {t['link']} | {t['kind']} | {t['cbr']:.4f} | {t['psnr']:.2f} | {t['psnr_w']:.2f} | "
                     f"{t['ms_ssim']:.3f} | {t['lost']}/{t['images']} |")
    return "\n".join(lines) + "\n"


def plot(table: list[dict], path: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for link in dict.fromkeys(t["link"] for t in table):
        sel = sorted((t for t in table if t["link"] == link), key=lambda t: t["cbr"])
        style = "o-" if link.startswith("lamsc") else "^-" if link == ABLATION else "s--"
        a1.plot([t["cbr"] for t in sel], [t["psnr"] for t in sel], style, label=f"{link} ({sel[0]['kind']})")
        a2.plot([t["cbr"] for t in sel], [t["ms_ssim"] for t in sel], style, label=link)
    for a, label in ((a1, "PSNR (dB)"), (a2, "MS-SSIM")):
        a.set(xlabel="CBR (channel uses / 3HW)", ylabel=label, xscale="log",
              title=f"{label.split()[0]} against CBR, {args.channel} {args.snr:g} dB")
        a.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
