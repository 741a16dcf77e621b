"""The per-round report of a federated run: JSON, a CSV with one line per round and client, and a PNG of the
held-out metric and the bytes each way against rounds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from lamsc.federated.messages import ARRAY_KINDS
from lamsc.semcom.metrics import strict_json

METRICS = ("psnr", "ms_ssim", "kept", "accuracy", "miou")


def flat_rows(rows: list[dict]) -> list[dict]:
    """One dict per round and client: round, client, metrics, bytes up/down per kind, device seconds."""
    out = []
    for row in rows:
        for client, r in row["clients"].items():
            flat = {"round": row["round"], "client": int(client), **{m: r.get(m) for m in METRICS}}
            for way in ("up", "down"):
                flat.update({f"bytes_{way}_{k}": r[f"bytes_{way}"][k] for k in ARRAY_KINDS})
            flat["device_seconds"] = r["device_seconds"]
            flat["server_seconds"] = row["server_seconds"]
            out.append(flat)
    return out


def write_report(rows: list[dict], out: Path, extra: dict | None = None) -> dict[str, Path]:
    """Write ``report.json`` (rows and ``extra``), ``report.csv`` and ``report.png`` into ``out``. A metric
    undefined for a round (MS-SSIM of crops under five scales) is null in the JSON and an empty cell in the CSV."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "csv": out / "report.csv", "png": out / "report.png"}
    paths["json"].write_text(json.dumps(strict_json({"rounds": rows, **(extra or {})}), indent=2))
    flat = flat_rows(rows)
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]) if flat else ["round"])
        writer.writeheader()
        writer.writerows(strict_json(flat))  # DictWriter writes None as an empty cell, NaN as "nan"
    plot(flat, paths["png"])
    return paths


def plot(flat: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for client in sorted({r["client"] for r in flat}):
        rows = [r for r in flat if r["client"] == client]
        ax1.plot([r["round"] for r in rows], [r["psnr"] for r in rows], "o-", label=f"client {client}")
        for way, style in (("up", "-"), ("down", "--")):
            ax2.plot([r["round"] for r in rows], [sum(r[f"bytes_{way}_{k}"] for k in ARRAY_KINDS) / 1e6 for r in rows],
                     style, marker="o", color=f"C{client}", label=f"client {client} {way}")
    ax1.set(xlabel="round (0 = before fine-tuning)", ylabel="held-out PSNR (dB)", title="held-out PSNR")
    ax2.set(xlabel="round", ylabel="MB per round", title="bytes up and down (activations + gradients + parameters)")
    ax1.legend()
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
