"""What retrieval is worth on a link: PSNR with and without it against SNR, on the same noise.

``sweep_gain(SweepConfig(...))`` sends each image at each SNR through a Transmitter and a Receiver with a
Retriever, and measures both the image the decoder gave (the receiver without retrieval, bit for bit: the
Retriever keeps it as ``last["decoded"]``) and the one retrieval made of it, so the two differ by retrieval
alone; it writes gain.json and gain.png (mean PSNR with and without retrieval against SNR, one line per group of
images) to ``out``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import numpy as np

from lamsc.retrieval.refine import Retriever
from lamsc.semcom import metrics
from lamsc.semcom.channels import Channel
from lamsc.semcom.metrics import strict_json
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.transmission import Receiver, Transmitter, transmit

SNRS = (0.0, 5.0, 10.0, 15.0, 20.0)


@dataclass
class SweepConfig:
    """``groups``: name -> list of (name, image (H, W, 3) uint8) (e.g. "in the bases", "in neither");
    ``snrs`` in dB over ``channel``; ``seed``: noise seed of the first image (then one per image and SNR);
    files to ``out``."""

    groups: dict[str, list[tuple[str, np.ndarray]]]
    snrs: Sequence[float] = SNRS
    channel: str = "awgn"
    seed: int = 0
    out: Union[str, Path] = Path("lamsc-out/kb-gain")


@dataclass(repr=False)
class SweepResult:
    """Per group and SNR: mean PSNR without and with retrieval (dB), the gain, the fraction of images
    retrieval changed, and the mean seconds of its steps; ``rows``: per image; ``files``: gain.json, gain.png."""

    summary: dict
    rows: list[dict]
    files: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"summary": self.summary, "rows": self.rows, "files": self.files}


def sweep_gain(config: SweepConfig, codec: LamscModel, segmenter: Segmenter, retriever: Retriever,
               track: Callable[..., Iterable] | None = None) -> SweepResult:
    tx, rx = Transmitter(codec, segmenter), Receiver(codec, refine=retriever)
    track = track or (lambda items, description: items)
    rows = []
    jobs = [(g, name, img, snr) for g, items in config.groups.items() for name, img in items for snr in config.snrs]
    for k, (group, name, img, snr) in enumerate(track(jobs, description="retrieval against SNR")):
        ch = Channel(config.channel, float(snr))
        with_kb = transmit(img, tx, rx, ch, config.seed + k)
        rec = with_kb.reconstruction
        without = float(metrics.psnr(img, retriever.last["decoded"])) if not rec.lost else with_kb.psnr
        rows.append({"group": group, "image": name, "snr_db": float(snr), "psnr": without,
                     "psnr_kb": with_kb.psnr, "used": rec.retrieved is not None,
                     "label": (rec.retrieved or {}).get("label", ""), "agreement": retriever.last.get("agreement"),
                     "score": retriever.last.get("score"),
                     "seconds": {**retriever.last.get("seconds", {}), "receive": with_kb.seconds["receive"]}})
    summary = summarise(rows, retriever.threshold)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result = SweepResult(summary, rows, {"json": str(out / "gain.json"), "png": str(out / "gain.png")})
    (out / "gain.json").write_text(json.dumps(strict_json(result.to_dict()), indent=2, allow_nan=False))
    plot_gain(summary, out / "gain.png", f"{config.channel}; threshold {retriever.threshold:.3f}")
    return result


def summarise(rows: list[dict], threshold: float) -> dict:
    """Per group and SNR, the means of ``rows`` (a sweep's, run at ``threshold``): a row whose best score is
    below ``threshold`` counts with its PSNR without retrieval."""
    summary: dict = {}
    for row in rows:
        used = row["used"] and row["score"] is not None and row["score"] >= threshold
        at = summary.setdefault(row["group"], {}).setdefault(f"{row['snr_db']:g}", [])
        at.append((row["psnr"], row["psnr_kb"] if used else row["psnr"], used, row["seconds"]))
    for group, per in summary.items():
        for snr, vals in per.items():
            steps = sorted({k for v in vals for k in v[3]})
            per[snr] = {"images": len(vals), "psnr": float(np.mean([v[0] for v in vals])),
                        "psnr_kb": float(np.mean([v[1] for v in vals])),
                        "gain_db": float(np.mean([v[1] - v[0] for v in vals])),
                        "used": float(np.mean([v[2] for v in vals])),
                        "seconds": {k: float(np.mean([v[3].get(k, 0.0) for v in vals])) for k in steps}}
    return summary


def plot_gain(summary: dict, path: Path, title: str) -> None:
    """Mean PSNR without (dashed) and with (solid) retrieval against SNR, one colour per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (group, per_snr) in enumerate(summary.items()):
        snrs = [float(s) for s in per_snr]
        colour = f"C{i}"
        ax.plot(snrs, [v["psnr"] for v in per_snr.values()], "--o", color=colour, label=f"{group}: without")
        ax.plot(snrs, [v["psnr_kb"] for v in per_snr.values()], "-o", color=colour, label=f"{group}: with retrieval")
    ax.set_xlabel("channel SNR (dB)")
    ax.set_ylabel("mean PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
