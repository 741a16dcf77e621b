"""Quality against latency, size and MACs of every compression candidate (CSV + PNG + markdown).

Runs ``lamsc compress`` (codec, or the SKB with --sam) and tabulates its candidates, or tabulates a run
already made (``--from-run DIR``, the folder holding its compress.json). Latencies in one run are timed
interleaved (lamsc.compress.cost.measure_onnx), so the ratios to the teacher are the figures to compare.

    python benchmarks/compress_candidates.py --from-run lamsc-out/compressed --name codec
    python benchmarks/compress_candidates.py --budget latency-ms=50% --ratios 0,0.4,0.5 --steps 800 --name codec
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--from-run", type=Path, help="a finished `lamsc compress` output folder to tabulate")
    p.add_argument("--name", default="codec", help="results are written as compress_<name>.{csv,png,md,json}")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("compress_args", nargs=argparse.REMAINDER, help="arguments for `lamsc compress` (a new run)")
    return p


def rows_of(results: dict) -> list[dict]:
    teacher = results["teacher"]
    skb = results.get("part") == "skb"
    rows = []
    for c in results["candidates"]:
        if c["cost"] is None:
            continue
        q = c["quality"]
        rows.append({"candidate": c["name"], "precision": c["precision"], "ratio": c["ratio"],
                     "latency_ms": c["cost"]["latency_ms"],
                     "latency_x_teacher": round(c["cost"]["latency_ms"] / teacher["cost"]["latency_ms"], 4),
                     "energy_mj": c["cost"]["energy_mj"], "params": c["cost"]["params"], "bytes": c["cost"]["bytes"],
                     "macs": c["cost"]["macs"],
                     **({"cosine": round(q["cosine"], 5), "mask_iou": round(q["iou"], 4)} if skb else
                        {"psnr_db": round(q["psnr"], 3), "dpsnr_db": round(q["psnr"] - teacher["quality"]["psnr"], 3),
                         "ssim": round(q["ssim"], 4), "bits": round(q["bits"]) if "bits" in q else "",
                         "bits_x_teacher": q.get("bits_x_teacher", "")}),
                     "chosen": bool(results["chosen"] and results["chosen"]["name"] == c["name"])})
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = "psnr_db" if "psnr_db" in rows[0] else "cosine"
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, (key, label, scale) in zip(axes, (("latency_ms", "latency per image (ms)", 1),
                                              ("bytes", "model size (MB)", 1e-6), ("macs", "GMACs per image", 1e-9))):
        for precision, marker in (("fp32", "o"), ("fp16", "s"), ("int8", "^")):
            pts = [r for r in rows if r["precision"] == precision]
            if pts:
                ax.scatter([r[key] * scale for r in pts], [r[quality] for r in pts], marker=marker, label=precision)
        for r in rows:
            ax.annotate(r["candidate"].rsplit("-", 1)[0] if quality == "psnr_db" else r["candidate"],
                        (r[key] * scale, r[quality]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR (dB), whole link" if quality == "psnr_db" else "embedding cosine vs teacher")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    run = args.from_run
    if run is None:
        extra = [a for a in args.compress_args if a != "--"]
        run = Path("lamsc-out") / f"bench-compress-{args.name}"
        code = subprocess.call([sys.executable, "-m", "lamsc.cli", "compress", *extra, "--out", str(run)])
        if code not in (0, 2):  # 2: no candidate within budget; the candidates are still worth tabulating
            return code
    results = json.loads((run / "compress.json").read_text())["results"]
    rows = rows_of(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compress_{args.name}"
    with open(stem.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    title = f"{results['budget_text']} on {results['target']} ({results['teacher']['cost']['how']})"
    plot(rows, stem.with_suffix(".png"), title)
    lines = [f"# compress candidates: {args.name}", "", title, "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in r.values()) + " |" for r in rows]
    rejected = [c for c in results["candidates"] if c.get("rejected")]
    lines += ["", "Rejected (not built, so not in the table):"] * bool(rejected)
    lines += [f"- {c['name']}: {c['rejected']}" for c in rejected]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    stem.with_suffix(".json").write_text(json.dumps({"name": f"compress_{args.name}", "results": results}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
