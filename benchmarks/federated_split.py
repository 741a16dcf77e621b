"""Federated split fine-tuning against its baselines on a domain shift (lamsc.federated; issue figures).

Two clients share the shipped default model, which was trained on undistorted photographs: the 58 real
photographs of /work/photos (built by shared/data/photos.sh) are dealt out by brightness, client 0's shifted
to night (gamma 2.2, blue cast), client 1's to a warm colour cast, each scaled to 128 pixels on its longer
side; every 4th photograph of a client is held out. The same plan then trains federated split (Flower
simulation), local-only, centralised and full-model FedAvg, and the held-out PSNR at 10 dB AWGN is compared.

    nice -n 10 .venv/bin/python benchmarks/federated_split.py --out /tmp/fedbench [--rounds 8 --local-steps 8]

Writes OUT/summary.json, the federated run's report (JSON/CSV/PNG) and baselines.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from lamsc.federated import FederateConfig, federate
from lamsc.federated.baselines import run_baselines
from lamsc.federated.partition import partition_by_content, resized, shifted, write_folder
from lamsc.federated.server import SplitPlan
from lamsc.semcom.images import iter_images
from lamsc.semcom.model import load_model

SHIFTS = ("night", "warm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=Path("/work/photos"))
    ap.add_argument("--out", type=Path, default=Path("lamsc-out/federated-bench"))
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--local-steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-4)
    args = ap.parse_args()

    folders = [args.out / "data" / f"client-{i}-{s}" for i, s in enumerate(SHIFTS)]
    if not all(f.is_dir() for f in folders):
        photos = resized(list(iter_images([args.photos])), args.side)
        for folder, part, shift in zip(folders, partition_by_content(photos, len(SHIFTS)), SHIFTS):
            write_folder(shifted(part, shift), folder)
    config = FederateConfig(data=folders, rounds=args.rounds, local_steps=args.local_steps, batch=args.batch,
                            crop=args.crop, lr=args.lr, out=args.out / "split")
    start = time.perf_counter()
    result = federate(config)
    split_wall = time.perf_counter() - start
    base = load_model(None)
    plan = SplitPlan(base.config.to_json(), rounds=args.rounds, local_steps=args.local_steps, batch=args.batch,
                     crop=args.crop, lr=args.lr)
    baselines = run_baselines(base, folders, plan, args.out / "baselines")

    def mean_psnr(clients: dict) -> float:
        return statistics.mean(c["psnr"] for c in clients.values())

    last = result.rows[-1]["clients"]
    split_seconds = {c: statistics.mean(row["clients"][c]["device_seconds"] for row in result.rows[1:]) for c in last}
    fedavg_seconds = {c: statistics.mean(v) for c, v in baselines["fedavg"]["device_seconds_per_round"].items()}
    split_bytes = {c: {way: sum(last[c][f"bytes_{way}"].values()) for way in ("up", "down")} for c in last}
    summary = {
        "command": "nice -n 10 .venv/bin/python benchmarks/federated_split.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("photos", "out")),
        "git": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "held_out_psnr_db": {"none": mean_psnr(baselines["none"]["clients"]), "split": mean_psnr(last),
                             "local": mean_psnr(baselines["local"]["clients"]),
                             "centralised": mean_psnr(baselines["centralised"]["clients"]),
                             "fedavg": mean_psnr(baselines["fedavg"]["clients"])},
        "held_out_psnr_db_per_client": {m: {c: v["psnr"] for c, v in baselines[m]["clients"].items()} for m in baselines}
        | {"split": {c: v["psnr"] for c, v in last.items()}},
        "kept_fraction": {"none": statistics.mean(c["kept"] for c in baselines["none"]["clients"].values()),
                          "split": statistics.mean(c["kept"] for c in last.values())},
        "device_seconds_per_round": {"split": split_seconds, "fedavg": fedavg_seconds},
        "bytes_per_round": {"split": split_bytes, "fedavg": baselines["fedavg"]["parameter_bytes_per_round"]},
        "split_wall_seconds": split_wall,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
