"""What the receiver's knowledge bases are worth and what they cost: PSNR with and without retrieval against
SNR on scene sequences of real photographs; retrieval latency, memory and index build time against base size;
the bytes a global base's synchronisation puts on the link.

Scenes: the photographs of ``--photos`` (built by /work/shared/data/photos.sh: real photographs from Debian
packages), one scene per photograph family (lamsc.retrieval.scenes.family), split by seed 0 into five groups:
fusion training (16), threshold calibration (10), this link's local base (8), other devices' global base (8),
and scenes in neither base (8). Each scene is the photograph with its short side at 256 pixels; a camera looks
at a point of it and every view is a 128 x 128 crop there, shifted up to 16 pixels each way, relit (gain,
tint, gamma) and, in 30% of views, partly occluded by a patch of another photograph (lamsc.retrieval.scenes).
The local base holds 4 earlier views of each local scene, the global base 4 views of each global scene that
other devices delivered, each from its own camera point (``--global-devices``, default 4: one view from each of
four devices), each as a digital link delivers it (JPEG q90). Two later, held-out views of every scene cross the
link at each SNR. The gain is measured again, at the fusion network's threshold, with the global base's 4 views
all from one other device: a single other viewpoint, which covers less of the view.

    python benchmarks/kb_retrieval.py --photos /work/photos --out benchmarks/results
    python benchmarks/kb_retrieval.py --photos /work/photos --split-into DIR   # the training/calibration split

The shipped fusion network (lamsc/retrieval/default_fusion) is made from that split:

    lamsc kb train DIR/train --bundled --calibration DIR/calibration --steps 1500 --views 24 --out lamsc-out/fusion

Writes kb_retrieval.json, kb_gain.png, kb_scaling.png and kb_retrieval.md into --out, and the sweep's rows at
the fusion network's own threshold into --out/kb_gain/.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lamsc.retrieval.base import KnowledgeBase
from lamsc.retrieval.fusion import FusionNet
from lamsc.retrieval.index import build_index, index_bytes, search
from lamsc.retrieval.keys import image_keys
from lamsc.retrieval.refine import Retriever
from lamsc.retrieval.scenes import scene_image, scene_views, split_families
from lamsc.retrieval.sweep import SNRS, SweepConfig, plot_gain, sweep_gain
from lamsc.retrieval.training import delivered
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import image_files, load_image
from lamsc.semcom.metrics import strict_json
from lamsc.semcom.model import load_model

from provenance import git_revision, processor

OTHER_THRESHOLDS = (-0.1, -0.05, 0.0, 0.05)  # around the fusion network's own, to show what it trades
GROUPS = {"train": 16, "calibration": 10, "local": 8, "global": 8, "neither": 8}
SIZES = (1_000, 10_000, 100_000)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=Path, default=Path("/work/photos"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--model", type=Path, default=None, help="the codec; default: the shipped model")
    p.add_argument("--fusion", type=Path, default=None, help="default: the shipped fusion network")
    p.add_argument("--split-into", type=Path, default=None, help="only write the split as folders of links")
    p.add_argument("--held-out", type=int, default=2, help="held-out views per scene and SNR")
    p.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    p.add_argument("--global-devices", type=int, default=4, choices=(1, 2, 4),
                   help="other devices (camera points) the global base's 4 views per scene come from")
    return p


def split(photos: Path) -> dict[str, list[Path]]:
    files = {p.name: p for p in image_files(photos)}
    groups = split_families(sorted(files), list(GROUPS.values()), seed=0)
    return {g: [files[n] for n in names] for g, names in zip(GROUPS, groups)}


def gain(groups: dict[str, list[Path]], codec, fusion, held_out: int, out: Path, global_devices: int = 4,
         other_thresholds: tuple[float, ...] = OTHER_THRESHOLDS) -> tuple[dict, dict]:
    """Retrieval's gain at the fusion network's threshold and at ``other_thresholds`` around it, with the global
    base's 4 views of each scene from ``global_devices`` other devices (camera points)."""
    if 4 % global_devices:
        raise ValueError(f"--global-devices {global_devices}: give 1, 2 or 4 (each delivers 4 / N views)")
    rng = np.random.default_rng(1)
    scenes = {g: {p.stem: scene_image(load_image(p)) for p in groups[g]} for g in ("local", "global", "neither")}
    others = [s for g in scenes.values() for s in g.values()]
    entries = {"local": [], "global": []}
    test = {"in local base": [], "in global base": [], "in neither": []}
    for g, name_of in (("local", "in local base"), ("global", "in global base"), ("neither", "in neither")):
        for name, scene in scenes[g].items():
            views = scene_views(scene, name, 4 + held_out, rng, others=others)
            if g == "global":  # other devices: the same scene, each from its own camera point
                views = [v for _ in range(global_devices)
                         for v in scene_views(scene, name, 4 // global_devices, rng, others=others)] + views[4:]
            if g in entries:
                entries[g] += [(name, delivered(v.pixels)) for v in views[:4]]
            test[name_of] += [(f"{name}#{i}", v.pixels) for i, v in enumerate(views[4:])]
    bases = [KnowledgeBase.build(f"{g}-base", g, [e for _, e in es], [n for n, _ in es],
                                 [f"{g}-camera"] * len(es), list(range(len(es)))) for g, es in entries.items()]
    # Which entries are composited depends on the threshold, so each threshold is its own run (same noise).
    threshold = fusion.config.threshold
    by_threshold, result, seconds = {}, None, 0.0
    own = round(threshold, 4)
    for t in sorted({round(threshold + d, 4) for d in other_thresholds} - {own}) + [own]:  # own last: its rows stay
        t0 = time.perf_counter()
        run = sweep_gain(SweepConfig(test, SNRS, out=out / "kb_gain"), codec, FallbackSegmenter(),
                         Retriever(bases, fusion, threshold=t))
        by_threshold[f"{t:g}"] = {g: {snr: round(v["gain_db"], 3) for snr, v in per.items()}
                                  for g, per in run.summary.items()}
        if t == own:
            result, seconds = run, time.perf_counter() - t0
    by_threshold = dict(sorted(by_threshold.items(), key=lambda kv: float(kv[0])))
    summary = result.summary
    plot_gain(summary, out / "kb_gain.png", f"AWGN, held-out views; threshold {threshold:.3f}")
    traffic = {b.kind: {"entries": len(b), "bytes": sum(len(d) for d in b.files().values()),
                        "content_bytes_per_entry": b.memory_bytes()["content"] / len(b),
                        "png_bytes_per_entry": float(np.mean([len(png(b.content(i))) for i in range(len(b))])),
                        "key_bytes_per_entry": b.keys.nbytes / len(b)} for b in bases}
    labels = [r for r in result.rows if r["score"] >= threshold]
    info = {"summary": summary, "threshold": threshold, "gain_db_by_threshold": by_threshold, "seconds": seconds,
            "traffic": traffic,
            "knn_label_accuracy": float(np.mean([r["label"] == r["image"].split("#")[0] for r in labels]))
            if labels else None, "images_per_group": {g: len(v) for g, v in test.items()},
            "png": str(out / "kb_gain.png"),
            "sharpness_weight": fusion.config.sharpness_weight,
            "score": {g: {"median": float(np.median([r["score"] for r in result.rows if r["group"] == g])),
                          "max": float(np.max([r["score"] for r in result.rows if r["group"] == g]))}
                          for g in test}}
    return info, result.to_dict()


def png(image: np.ndarray) -> bytes:
    """``image`` as PNG: what synchronising an entry over a link would carry (the base keeps it raw)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def scaling(photos: list[Path], sizes: list[int]) -> dict:
    """Keys of random 64 x 64 crops of the photographs (any scale), for bases of each size."""
    rng = np.random.default_rng(2)
    scenes = [scene_image(load_image(p)) for p in photos]
    n = max(sizes)
    keys = []
    while sum(len(k) for k in keys) < n:
        batch = []
        for _ in range(2000):
            s = scenes[int(rng.integers(len(scenes)))]
            side = int(rng.integers(48, 129))
            y, x = int(rng.integers(0, s.shape[0] - side + 1)), int(rng.integers(0, s.shape[1] - side + 1))
            crop = torch.from_numpy(s[y: y + side, x: x + side]).permute(2, 0, 1)[None].float()
            batch.append(torch.nn.functional.interpolate(crop, size=64, mode="area")[0].permute(1, 2, 0)
                         .round().byte().numpy())
        keys.append(image_keys(np.stack(batch)))
    keys = np.concatenate(keys)[:n]
    queries = keys[rng.choice(n, 200, replace=False)] + rng.normal(0, 0.01, (200, keys.shape[1])).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    rows = {}
    for size in sizes:
        for kind in ("flat", "ivf"):
            t0 = time.perf_counter()
            index = build_index(keys[:size], kind)
            build_s = time.perf_counter() - t0
            times = []
            for q in queries:
                t0 = time.perf_counter()
                search(index, q, 4)
                times.append(time.perf_counter() - t0)
            exact = search(build_index(keys[:size], "flat"), queries, 1)[1][:, 0] if kind == "ivf" else None
            recall = float(np.mean(search(index, queries, 1)[1][:, 0] == exact)) if exact is not None else 1.0
            rows[f"{size}/{kind}"] = {"entries": size, "index": kind, "build_s": build_s,
                                      "search_ms_median": 1e3 * statistics.median(times),
                                      "search_ms_p90": 1e3 * float(np.percentile(times, 90)),
                                      "recall_at_1": recall, "index_bytes": index_bytes(index),
                                      "keys_bytes": int(keys[:size].nbytes)}
    return rows


def per_image_costs(groups: dict[str, list[Path]]) -> dict:
    """Key, fetch (4 PNG entries) and registration (one entry) on 128 x 128 views, median of 30 runs."""
    rng = np.random.default_rng(3)
    scene = scene_image(load_image(groups["local"][0]))
    views = scene_views(scene, "s", 5, rng)
    base = KnowledgeBase.build("b", "local", [delivered(v.pixels) for v in views[:4]])
    retriever = Retriever([base], FusionNet.load(None), k=4)
    img = views[4].pixels
    steps = {"key": [], "search": [], "fetch": [], "align": []}
    fuse = []
    for _ in range(30):
        found, seconds = retriever.candidates(img, accept=-1.0)  # every entry light-matched, as when all are used
        for k in steps:
            steps[k].append(seconds[k])
        a = found[0][1]
        t0 = time.perf_counter()
        retriever.fuse(img, a.image, a.coverage, 0.0)
        fuse.append(time.perf_counter() - t0)
    out = {k: 1e3 * statistics.median(v) for k, v in steps.items()}
    out["align_per_entry"] = out["align"] / 4
    out["fuse"] = 1e3 * statistics.median(fuse)
    return out


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    torch.set_num_threads(1)  # one core: what a receiver's CPU gives a side task, and steadier on a shared machine
    if not args.photos.is_dir():
        print(f"{args.photos} not found: build it with /work/shared/data/photos.sh {args.photos}", file=sys.stderr)
        return 2
    groups = split(args.photos)
    if args.split_into:
        for g in ("train", "calibration"):
            (args.split_into / g).mkdir(parents=True, exist_ok=True)
            for p in groups[g]:
                link = args.split_into / g / p.name
                if not link.exists():
                    link.symlink_to(p.resolve())
        print(json.dumps({g: [p.name for p in v] for g, v in groups.items()}, indent=2))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    codec, fusion = load_model(args.model), FusionNet.load(args.fusion)
    gain_info, _ = gain(groups, codec, fusion, args.held_out, args.out, args.global_devices)
    if args.global_devices != 1:  # the pessimistic global base: one other viewpoint
        one = gain(groups, codec, fusion, args.held_out, args.out / "kb_gain_one_device", 1, ())[0]
        gain_info["one_other_device"] = {g: {snr: round(v["gain_db"], 3) for snr, v in per.items()}
                                         for g, per in one["summary"].items()}
    costs = per_image_costs(groups)
    scale = scaling([p for g in groups.values() for p in g], args.sizes)
    git = git_revision()
    doc = {"config": vars(args) | {"photos": str(args.photos), "out": str(args.out), "model": str(args.model),
                                   "fusion": str(args.fusion), "split_into": None},
           "git": git, "device": processor(), "threads": torch.get_num_threads(),
           "codec": codec.config.trained, "fusion": fusion.config.trained, "threshold": fusion.config.threshold,
           "split": {g: [p.name for p in v] for g, v in groups.items()},
           "gain": gain_info, "per_image_ms": costs, "scaling": scale}
    (args.out / "kb_retrieval.json").write_text(json.dumps(strict_json(doc), indent=2, allow_nan=False))
    plot_scaling(scale, args.out / "kb_scaling.png")
    (args.out / "kb_retrieval.md").write_text(table(doc))
    print(table(doc))
    return 0


def plot_scaling(scale: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for kind, style in (("flat", "-o"), ("ivf", "--s")):
        rows = [r for r in scale.values() if r["index"] == kind]
        n = [r["entries"] for r in rows]
        axes[0].plot(n, [r["search_ms_median"] for r in rows], style, label=kind)
        axes[1].plot(n, [(r["index_bytes"]) / 1e6 for r in rows], style, label=kind)
    for ax, label in zip(axes, ("search ms per image (median, 1 core)", "index memory (MB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("entries")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(doc: dict) -> str:
    g = doc["gain"]
    n = g["images_per_group"]
    devices = "" if doc["config"]["global_devices"] == 4 else f" --global-devices {doc['config']['global_devices']}"
    lines = ["# Retrieval at the receiver: gain against SNR, and costs against base size", "",
             f"Made by `python benchmarks/kb_retrieval.py --photos {doc['config']['photos']} --out "
             f"{doc['config']['out']}{devices}` at {doc['git']} on {doc['device']} ({doc['threads']} thread), "
             f"with the codec `{doc['codec'].get('preset', 'custom')}` and the fusion network trained as this "
             f"script's docstring says (threshold {doc['threshold']:.3f}).", "",
             "Scenes: real photographs (/work/shared/data/photos.sh), one per family, split by seed 0 into fusion "
             "training (16), threshold calibration (10), the local base's scenes (8), the global base's (8) and "
             "scenes in neither (8). A view is a 128 x 128 crop at the scene's camera point, shifted up to 16 pixels "
             "each way, relit (gain 0.6-1.4, tint ±10%, gamma 0.8-1.25), and in 30% of views occluded by patches "
             "of other photographs. The local base holds 4 earlier views of each local scene, the global base 4 "
             f"views of each global scene from {doc['config']['global_devices']} other device(s), each from its own "
             "camera point, as a digital link delivers them (JPEG q90); "
             f"held-out later views cross AWGN: {n}. Same noise with and without retrieval.", "",
             "![PSNR with and without retrieval against SNR](kb_gain.png) ![search and memory against base "
             "size](kb_scaling.png)", "",
             "| scenes | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |", "|---|" + "---|" * len(SNRS)]
    for group, per in g["summary"].items():
        lines.append(f"| {group}: PSNR without → with retrieval (gain; share used) | " + " | ".join(
            f"{v['psnr']:.2f} → {v['psnr_kb']:.2f} ({v['gain_db']:+.2f}; {v['used']:.0%})"
            for v in per.values()) + " |")
    if "one_other_device" in g:
        lines += ["", "gain (dB) with the global base's 4 views of each scene from one other device (a single other "
                  "viewpoint; same threshold, a run of its own):", "",
                  "| scenes | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |", "|---|" + "---|" * len(SNRS)]
        lines += [f"| {group} | " + " | ".join(f"{v:+.2f}" for v in per.values()) + " |"
                  for group, per in g["one_other_device"].items()]
    lines += ["", "gain (dB) at other thresholds (a run each, the same noise):", "",
              "| threshold | scenes | " + " | ".join(f"{s:g} dB" for s in SNRS) + " |",
              "|---|---|" + "---|" * len(SNRS)]
    for t, per_group in g["gain_db_by_threshold"].items():
        for group, per in per_group.items():
            lines.append(f"| {t} | {group} | " + " | ".join(f"{v:+.2f}" for v in per.values()) + " |")
    c = doc["per_image_ms"]
    lines += ["", f"threshold on the registration score (agreement + {g['sharpness_weight']:g} x peak-to-sidelobe "
              f"ratio): {g['threshold']:.3f}; best score per image, median (max): "
              + "; ".join(f"{k} {v['median']:.3f} ({v['max']:.3f})" for k, v in g["score"].items())
              + f". kNN label right on {(g['knn_label_accuracy'] or 0):.0%} of the images retrieval used.",
              "", "| per 128 x 128 image, 1 core | key | search | fetch 4 entries | register 1 entry | fuse |",
              "|---|---|---|---|---|---|",
              f"| ms (median of 30) | {c['key']:.2f} | {c['search']:.3f} | {c['fetch']:.2f} "
              f"| {c['align_per_entry']:.2f} | {c['fuse']:.2f} |", "",
              "| entries | index | build s | search ms median (p90) | recall@1 vs flat | index MB | keys MB |",
              "|---|---|---|---|---|---|---|"]
    for r in doc["scaling"].values():
        lines.append(f"| {r['entries']:,} | {r['index']} | {r['build_s']:.2f} | {r['search_ms_median']:.3f} "
                     f"({r['search_ms_p90']:.3f}) | {r['recall_at_1']:.3f} | {r['index_bytes'] / 1e6:.1f} | "
                     f"{r['keys_bytes'] / 1e6:.1f} |")
    t = g["traffic"]
    lines += ["", "synchronising a base over the link, bytes per entry: " + "; ".join(
        f"{k}: key {v['key_bytes_per_entry']:.0f} (the receiver can recompute it), content "
        f"{v['png_bytes_per_entry']:.0f} as PNG ({v['content_bytes_per_entry']:.0f} raw, as the base keeps it)"
        for k, v in t.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
