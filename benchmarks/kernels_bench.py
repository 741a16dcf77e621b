"""CUDA kernels against the torch path each replaces and against the memory-bandwidth floor.

    python benchmarks/kernels_bench.py --out benchmarks/results

Needs a CUDA device and build/liblamsc_kernels.so. For each case: median and p90 of CUDA-event timings
after warm-up, the bytes each op must move, the bandwidth that implies, and its fraction of the measured
device-to-device copy bandwidth. Writes kernels_bench.csv and kernels_bench.md.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

from lamsc.kernels import asc_pack_cuda, asc_pack_torch, asc_unpack_cuda, library
from lamsc.semcom.asc_levels import depth_levels
from lamsc.semcom.asc_pack import asc_pack
from lamsc.semcom.payload import assemble, level_bits, parse


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--reps", type=int, default=50)
    return p


def timed(fn, reps: int) -> tuple[float, float]:
    """Median and p90 milliseconds of fn() by CUDA events, after 5 warm-up calls."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times)), float(np.percentile(times, 90))


def copy_bandwidth(reps: int) -> float:
    """Device-to-device copy, bytes read + written per second."""
    n = 256 << 20
    a, b = torch.empty(n, dtype=torch.uint8, device="cuda"), torch.empty(n, dtype=torch.uint8, device="cuda")
    ms, _ = timed(lambda: b.copy_(a), reps)
    return 2 * n / (ms / 1e3)


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    if not torch.cuda.is_available() or library() is None:
        print("needs a CUDA device and build/liblamsc_kernels.so (cmake -S . -B build && cmake --build build)",
              file=sys.stderr)
        return 2
    bw = copy_bandwidth(args.reps)
    rows = []
    # Features of a 1024 x 1024 image (16 x 128 x 128) and of a batch of eight.
    for c, h, w in [(16, 128, 128), (16, 128 * 8, 128)]:
        values = torch.randn(c, h, w, device="cuda")
        depth = torch.rand(h, w, device="cuda")
        packed = asc_pack(values.cpu().numpy(), depth.cpu().numpy(), 8, 8)  # the reference, for sizes
        moved = values.numel() * 4 + depth.numel() * 4 + len(packed.value_bytes) + len(packed.level_bytes)
        # the kernels on device memory, as they run after a GPU graph (no host copies in the time)
        # the torch path thresholds the depth itself, as the kernel does: its levels are inside the time
        for name, fn in [("asc_pack cuda", lambda: asc_pack_cuda(values, depth, 8, 8, level_bits(8))),
                         ("asc_pack torch",
                          lambda: asc_pack_torch(values, depth_levels(depth, 8), 8, 8, level_bits(8)))]:
            rows.append(_row(name, f"{c}x{h}x{w}", moved, timed(fn, args.reps), bw))
        parsed = parse(assemble(h * 8, w * 8, (c, h, w), 8, 8, packed.scale, None, packed.level_bytes,
                                packed.value_bytes))
        def unpack(parsed=parsed, device=values.device):
            return asc_unpack_cuda(parsed.level_bytes, parsed.value_bytes, parsed.shape, 8, 8, level_bits(8),
                                   float(parsed.step), device)

        rows.append(_row("asc_unpack cuda", f"{c}x{h}x{w}", moved, timed(unpack, args.reps), bw))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "kernels_bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    device = torch.cuda.get_device_name()
    lines = [f"Kernels on {device}; device-to-device copy {bw / 1e9:.0f} GB/s (read + write).", "",
             "| op | shape | median ms | p90 ms | GB/s | of copy bandwidth |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['op']} | {r['shape']} | {r['median_ms']:.4f} | {r['p90_ms']:.4f} | {r['gbps']:.1f} | "
              f"{r['fraction_of_copy']:.2f} |" for r in rows]
    (args.out / "kernels_bench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _row(op, shape, moved, times, bw) -> dict:
    median, p90 = times
    gbps = moved / (median / 1e3) / 1e9
    return {"op": op, "shape": shape, "bytes": moved, "median_ms": median, "p90_ms": p90, "gbps": gbps,
            "fraction_of_copy": gbps * 1e9 / bw}


if __name__ == "__main__":
    sys.exit(main())
