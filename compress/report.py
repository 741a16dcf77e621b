"""What a plan leaves behind: ``compress.json``, ``report.md`` (the table) and ``pareto.png``.

The JSON is ``{"name": "compress", "results": {...}}`` with the budget, the target, the teacher's and the
chosen candidate's cost and quality, every candidate, and the cost model's error on measured targets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lamsc.compress.plan import Plan
from lamsc.semcom.metrics import strict_json


def results(plan: Plan, extra: dict | None = None) -> dict:
    checks = [c.cost_model_check["error"] for c in plan.candidates if c.cost_model_check]
    return {
        "budget": plan.budget.to_dict(),
        "target": plan.target.name,
        "teacher": plan.teacher.to_dict(),
        "chosen": plan.chosen.to_dict() if plan.chosen else None,
        "closest": {**plan.closest.to_dict(), "cost_text": plan.closest.cost.describe()} if plan.closest else None,
        "shortfall": plan.shortfall,
        "pareto": [c.name for c in plan.pareto()],
        "cost_model_error": ({"median_abs": round(float(np.median(np.abs(checks))), 4),
                              "max_abs": round(float(np.max(np.abs(checks))), 4), "n": len(checks)}
                             if checks else None),
        "candidates": [c.to_dict() for c in plan.candidates],
        "table": {"header": header(plan), "rows": table_rows(plan)},
        **(extra or {}),
    }


def header(plan: Plan) -> list[str]:
    quality = (["PSNR dB", "dPSNR", "SSIM", "bits x teacher"] if plan.metric == "psnr" else
               ["cosine", "dcosine", "mask IoU"])
    return ["candidate", "latency ms", "x teacher", "energy mJ", "params", "MB", "GMACs", *quality, "in budget", ""]


def _quality_cells(plan: Plan, c) -> list[str]:
    t = plan.teacher.quality
    if plan.metric == "psnr":
        ssim = "n/a" if math.isnan(c.quality["ssim"]) else f"{c.quality['ssim']:.3f}"  # no image fit its window
        return [f"{c.quality['psnr']:.2f}", f"{c.quality['psnr'] - t['psnr']:+.2f}", ssim,
                f"{c.quality['bits_x_teacher']:.3f}"]
    return [f"{c.quality['cosine']:.4f}", f"{c.quality['cosine'] - t['cosine']:+.4f}", f"{c.quality['iou']:.3f}"]


def table_rows(plan: Plan) -> list[list[str]]:
    teacher = plan.teacher
    columns = header(plan)
    pareto = {c.name for c in plan.pareto()}
    rows = []
    for c in plan.candidates:
        if c.cost is None:
            rows.append([c.name, "rejected"] + [""] * (len(columns) - 2))
            continue
        mark = "chosen" if plan.chosen is c else ("pareto" if c.name in pareto else "")
        within = plan.choice.verdicts[c.name].describe()  # yes, no (over budget), or the requirement failed
        rows.append([c.name, f"{c.cost.latency_ms:.1f}", f"{c.cost.latency_ms / teacher.cost.latency_ms:.2f}",
                     f"{c.cost.energy_mj:.1f}", f"{c.cost.params / 1e3:.0f}k", f"{c.cost.bytes / 1e6:.2f}",
                     f"{c.cost.macs / 1e9:.2f}", *_quality_cells(plan, c), within, mark])
    return rows


def write(plan: Plan, out: Path, extra: dict | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    res = results(plan, extra)
    (out / "compress.json").write_text(json.dumps(strict_json({"name": "compress", "results": res}), indent=2,
                                                  allow_nan=False))
    columns = res["table"]["header"]
    what = (f"whole link at {plan.teacher.quality['snr_db']:g} dB AWGN" if plan.metric == "psnr" else
            "SKB embedding cosine and mask IoU against the teacher")
    lines = [f"# lamsc compress: {plan.budget.describe()} on {plan.target.name}", "",
             f"Cost: {plan.teacher.cost.how}. Quality: {what}, "
             f"mean over {', '.join(plan.teacher.quality['images'])}."
             + (f" Bits: mean payload bits per photograph against the teacher's; a candidate may send at most "
                f"{plan.max_rate_increase:.0%} more." if plan.max_rate_increase is not None else ""), "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in res["table"]["rows"]]
    if res["cost_model_error"]:
        e = res["cost_model_error"]
        lines += ["", f"Cost model against measurement: median |error| {e['median_abs']:.0%}, "
                      f"worst {e['max_abs']:.0%} over {e['n']} candidates."]
    lines += ["", f"Chosen: {plan.chosen.name}" if plan.chosen else f"Nothing chosen: {plan.shortfall}."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    plot_pareto(plan, out / "pareto.png")
    return res


def plot_pareto(plan: Plan, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    q = plan.metric
    built = [c for c in plan.candidates if c.cost is not None]
    front = sorted(plan.pareto(), key=lambda c: c.cost.latency_ms)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for precision, marker in (("fp32", "o"), ("fp16", "s"), ("int8", "^")):
        pts = [c for c in built if c.precision == precision]
        if pts:
            ax.scatter([c.cost.latency_ms for c in pts], [c.quality[q] for c in pts], marker=marker,
                       label=precision, zorder=3)
    ax.plot([c.cost.latency_ms for c in front], [c.quality[q] for c in front], "k--", lw=1,
            label="Pareto front")
    for c in built:
        ax.annotate(c.name if q != "psnr" else f"{c.ratio:.2f}", (c.cost.latency_ms, c.quality[q]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if "latency_ms" in plan.budget.limits:
        ax.axvline(plan.budget.limits["latency_ms"], color="C3", lw=1, label="latency budget")
    if plan.chosen:
        ax.scatter([plan.chosen.cost.latency_ms], [plan.chosen.quality[q]], s=160, facecolors="none",
                   edgecolors="C3", label=f"chosen: {plan.chosen.name}", zorder=4)
    ax.set(xlabel=f"latency per image (ms, {plan.target.name})",
           ylabel="PSNR (dB), whole link" if q == "psnr" else "embedding cosine vs teacher",
           title="compressed candidates" + (" (labels: prune ratio)" if q == "psnr" else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


