"""Federated split fine-tuning against its baselines on a domain shift (lamsc.federated; issue figures).

Two clients share the shipped default model, which was trained on undistorted photographs: the 58 real
photographs of /work/photos (built by shared/data/photos.sh) are dealt out by brightness, and each client is a
thermal camera: client 0 shows them in the ironbow palette, client 1 in the rainbow one
(lamsc.federated.partition.thermal), each scaled to 128 pixels on its longer side; every 4th photograph of a
client is held out. The same plan then trains federated split (Flower simulation), local-only, centralised and
full-model FedAvg, and the held-out PSNR at 10 dB AWGN, with ASC keeping half the features
(lamsc.federated.split.EVAL_RATE), is compared.

    python benchmarks/federated_split.py --out /tmp/fedbench [--rounds 20 --local-steps 10]

Writes OUT/summary.json, the federated run's report (JSON/CSV/PNG) and baselines.json.

``--task classification``: the same comparison for a classification head, on class folders of lamsc's labelled
synthetic shapes (circle, square, triangle) with label skew (client 0: the circles and half the squares;
client 1: the triangles and the other half); the shipped model gets a new head, trained on the server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

from lamsc.federated import FederateConfig, federate
from lamsc.federated.baselines import run_baselines
from lamsc.federated.partition import partition_by_content, resized, shifted, write_folder
from lamsc.federated.server import SplitPlan
from lamsc.federated.simulation import with_classifier
from lamsc.federated.split import FINE_TUNE_LR
from lamsc.semcom.images import iter_images
from lamsc.semcom.model import load_model
from lamsc.semcom.synthetic import SHAPE_CLASSES, make_shapes

from provenance import git_revision

SHIFTS = ("thermal-ironbow", "thermal-rainbow")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=Path("/work/photos"))
    ap.add_argument("--out", type=Path, default=Path("lamsc-out/federated-bench"))
    ap.add_argument("--rounds", type=int, default=SplitPlan.rounds)
    ap.add_argument("--local-steps", type=int, default=SplitPlan.local_steps)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--crop", type=int, default=96)
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--lr", type=float, default=FINE_TUNE_LR)
    ap.add_argument("--device-lr", type=float, default=None, help="the adapters' peak learning rate (default: --lr)")
    ap.add_argument("--task", choices=("reconstruction", "classification"), default="reconstruction")
    ap.add_argument("--shapes", type=int, default=400)
    ap.add_argument("--methods", default="none,local,centralised,fedavg", help="baselines to run beside the split run")
    args = ap.parse_args()

    if args.task == "classification":
        folders = [args.out / "data" / f"client-{i}" for i in range(2)]
        if not all(f.is_dir() for f in folders):
            shapes = make_shapes(args.shapes, seed=1)
            squares = [i for i in shapes if i.category == 1]
            parts = [[i for i in shapes if i.category == 0] + squares[::2],
                     [i for i in shapes if i.category == 2] + squares[1::2]]
            for folder, part in zip(folders, parts):
                write_folder([replace(i, name=f"{SHAPE_CLASSES[i.category]}/{i.name}", label=None) for i in part],
                             folder)
    else:
        folders = [args.out / "data" / f"client-{i}-{s}" for i, s in enumerate(SHIFTS)]
        if not all(f.is_dir() for f in folders):
            photos = resized(list(iter_images([args.photos])), args.side)
            for folder, part, shift in zip(folders, partition_by_content(photos, len(SHIFTS)), SHIFTS):
                write_folder(shifted(part, shift), folder)
    config = FederateConfig(data=folders, rounds=args.rounds, local_steps=args.local_steps, batch=args.batch,
                            crop=args.crop, lr=args.lr, device_lr=args.device_lr, out=args.out / "split")
    start = time.perf_counter()
    result = federate(config)
    split_wall = time.perf_counter() - start
    base = load_model(None)
    if args.task == "classification":
        base = with_classifier(base, list(SHAPE_CLASSES), 0)
    plan = SplitPlan(base.config.to_json(), rounds=args.rounds, local_steps=args.local_steps, batch=args.batch,
                     crop=args.crop, lr=args.lr, device_lr=args.device_lr, classes=base.config.classes)
    baselines = run_baselines(base, folders, plan, args.out / "baselines", tuple(args.methods.split(",")))

    def mean_psnr(clients: dict) -> float:
        return statistics.mean(c["psnr"] for c in clients.values())

    last = result.rows[-1]["clients"]
    methods = {**baselines, "split": {"clients": last}}
    summary = {
        "command": "python benchmarks/federated_split.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
            if k not in ("photos", "out") and v is not None) + f" --out {args.out}",
        "git": git_revision(),
        "held_out_psnr_db": {m: mean_psnr(v["clients"]) for m, v in methods.items()},
        "held_out_psnr_db_per_client": {m: {c: r["psnr"] for c, r in v["clients"].items()} for m, v in methods.items()},
        "kept_fraction": {m: statistics.mean(c["kept"] for c in v["clients"].values()) for m, v in methods.items()},
        "split_per_round_psnr_db": [mean_psnr(row["clients"]) for row in result.rows],
        "device_seconds_per_round": {"split": {c: statistics.mean(row["clients"][c]["device_seconds"]
                                                                  for row in result.rows[1:]) for c in last}},
        "bytes_per_round": {"split": {c: {way: last[c][f"bytes_{way}"] for way in ("up", "down")} for c in last}},
        "split_wall_seconds": split_wall,
    }
    if "fedavg" in baselines:
        summary["device_seconds_per_round"]["fedavg"] = {
            c: statistics.mean(v) for c, v in baselines["fedavg"]["device_seconds_per_round"].items()}
        summary["bytes_per_round"]["fedavg"] = baselines["fedavg"]["parameter_bytes_per_round"]
    if args.task == "classification":
        summary["held_out_accuracy_pct"] = {m: statistics.mean(c["accuracy"] for c in v["clients"].values())
                                            for m, v in methods.items()}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
