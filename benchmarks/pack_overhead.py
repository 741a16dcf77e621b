"""The ASC pack and unpack on the CPU against the graphs they sit between, on the fp32 ONNX Runtime bundle.

    python benchmarks/pack_overhead.py [--repeats 10] [--out benchmarks/results]

Per bundled photograph, medians over repeats after a warm-up, all in one run: the transmitter graph, the
pack (unit-power sending, ASC levels, quantisation and bit packing into the payload, as the Transmitter does
it), the payload's unpack (CRC, depth map, values) and the receiver graph; then the same for the digital mode
at its default step with the shipped density (pack: block-mean depth map shifted to the kept fraction, quantiser
and context range coder; unpack: CRC, depth map and the wavefront-by-wavefront decode). Pack + unpack as a
share of the two graphs' time is the figure: the masking and the coding must not cost what the networks cost.
Writes pack_overhead.{csv,md,json}.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from lamsc.export.bundle import write_bundle
from lamsc.export.samples import model_samples
from lamsc.runtime.backends import OnnxRuntimeBackend
from lamsc.runtime.latency import Latency
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.entropy import DEFAULT_STEP, DigitalMode, decode_features, load_entropy_model
from lamsc.semcom.payload import parse, unpack
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.transmission import pack_features

from provenance import git_revision, processor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--photos", type=int, default=10, help="how many of the bundled photographs")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    model, photos = load_model(), bundled_photos()[: args.photos]
    config = model.config
    samples = model_samples(model, build_segmenter(None), photos)
    digital = DigitalMode(load_entropy_model(), DEFAULT_STEP)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backend = OnnxRuntimeBackend(write_bundle(model, Path(tmp) / "fp32", "fp32", images=photos[:3]))
        for i, item in enumerate(photos):
            feeds = {graph: {t.name: x.numpy() for t, x in zip(backend.spec(graph).inputs, samples[graph][i])}
                     for graph in ("transmitter", "receiver")}
            out = backend.run("transmitter", feeds["transmitter"])
            size = item.pixels.shape[:2]

            def pack():
                return pack_features(out, config, size, 10.0, None).payload

            def digital_pack():
                return pack_features(out, config, size, 10.0, None, digital=digital).payload

            def digital_unpack():
                parsed = parse(coded)
                return decode_features(digital.entropy, parsed.value_bytes, parsed.levels, parsed.num_levels,
                                       parsed.shape[0], parsed.scale)

            payload, coded = pack(), digital_pack()
            c, h, w = out["features"].shape[1:]
            rows.append({"image": item.name, "size": "x".join(map(str, size)), "features": f"{c}x{h}x{w}",
                         "transmitter_ms": Latency.timing(lambda: backend.run("transmitter", feeds["transmitter"]),
                                                         args.repeats).median_ms,
                         "pack_ms": Latency.timing(pack, args.repeats).median_ms,
                         "unpack_ms": Latency.timing(lambda: unpack(payload), args.repeats).median_ms,
                         "receiver_ms": Latency.timing(lambda: backend.run("receiver", feeds["receiver"]),
                                                      args.repeats).median_ms,
                         "digital_pack_ms": Latency.timing(digital_pack, args.repeats).median_ms,
                         "digital_unpack_ms": Latency.timing(digital_unpack, args.repeats).median_ms})
    for r in rows:
        r["share"] = (r["pack_ms"] + r["unpack_ms"]) / (r["transmitter_ms"] + r["receiver_ms"])
        r["digital_share"] = (r["digital_pack_ms"] + r["digital_unpack_ms"]) / (r["transmitter_ms"] + r["receiver_ms"])
    total = {k: sum(r[k] for r in rows) for k in ("transmitter_ms", "pack_ms", "unpack_ms", "receiver_ms",
                                                   "digital_pack_ms", "digital_unpack_ms")}
    graphs = total["transmitter_ms"] + total["receiver_ms"]
    share = (total["pack_ms"] + total["unpack_ms"]) / graphs
    digital_share = (total["digital_pack_ms"] + total["digital_unpack_ms"]) / graphs
    git = git_revision()
    meta = {"git": git, "device": processor(), "cpu_threads": torch.get_num_threads(),
            "repeats": args.repeats, "backend": backend.name}
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "pack_overhead.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "pack_overhead.json").write_text(json.dumps({"meta": meta, "rows": rows, "total_ms": total,
                                                              "share": share, "digital_share": digital_share},
                                                             indent=2))
    lines = [f"# ASC pack + unpack against the graphs ({backend.name}, fp32, {meta['cpu_threads']} CPU threads, "
             f"git {git})", "", "`python benchmarks/pack_overhead.py`", "",
             f"Analog: the 8-bit ASC pack. Digital: the digital mode at step {DEFAULT_STEP:g} (shipped density, "
             f"kept fraction {digital.kept_fraction:g}): quantiser and context range coder, and its decode.", "",
             "| image | size | features | transmitter ms | pack ms | unpack ms | receiver ms | pack + unpack share "
             "| digital pack ms | digital unpack ms | digital share |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['image']} | {r['size']} | {r['features']} | {r['transmitter_ms']:.1f} | {r['pack_ms']:.2f} | "
              f"{r['unpack_ms']:.2f} | {r['receiver_ms']:.1f} | {r['share']:.1%} | {r['digital_pack_ms']:.2f} | "
              f"{r['digital_unpack_ms']:.2f} | {r['digital_share']:.1%} |" for r in rows]
    lines += [f"| all | | | {total['transmitter_ms']:.0f} | {total['pack_ms']:.1f} | {total['unpack_ms']:.1f} | "
              f"{total['receiver_ms']:.0f} | {share:.1%} | {total['digital_pack_ms']:.1f} | "
              f"{total['digital_unpack_ms']:.1f} | {digital_share:.1%} |"]
    (args.out / "pack_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
