"""A link on the PyTorch backend with glibc's default allocator against one that keeps freed blocks
(lamsc.allocator.keep_freed_memory), in one run.

    python benchmarks/allocator.py [--rounds 2] [--photos 10] [--out benchmarks/results]

Each setting runs in its own process (mallopt is process-wide), the two alternating for ``--rounds`` rounds so
that whatever else loads the machine weighs on both alike. A process segments the bundled photographs with
the fallback SKB, then times sending every one over AWGN at 10 dB with ASC at CBR 1/48 and receiving it: wall
and CPU seconds, and the kernel's share of the CPU time (page faults and zeroing). The figure is the ratio of
the median wall-clock times. Writes allocator.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from lamsc.allocator import user_tunes_malloc

from provenance import git_revision, processor

ONE_RUN = """
import json, os, sys, time
if sys.argv[1] == "kept":
    from lamsc.allocator import keep_freed_memory
    assert keep_freed_memory(), "nothing kept: not glibc, or malloc tuned in the environment"
from lamsc.semcom.channels import Channel
from lamsc.semcom.config import REFERENCE_CBR
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.segmenter import CachedSegmenter
from lamsc.semcom.skb import build_segmenter
from lamsc.semcom.transmission import Receiver, Transmitter, transmit

photos, model = bundled_photos()[: int(sys.argv[2])], load_model()
seg = CachedSegmenter(build_segmenter(None))
for p in photos:
    seg.segment(p.pixels)
tx, rx = Transmitter(model, seg, snr_db=10.0, cbr=REFERENCE_CBR), Receiver(model)
t0, c0 = time.perf_counter(), os.times()
psnr = [transmit(p.pixels, tx, rx, Channel("awgn", 10.0), seed=k).psnr for k, p in enumerate(photos)]
c1 = os.times()
print(json.dumps({"wall_s": time.perf_counter() - t0, "user_s": c1.user - c0.user, "system_s": c1.system - c0.system,
                  "psnr": psnr}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--photos", type=int, default=10, help="how many of the bundled photographs")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"default": [], "kept": []}
    env = {k: v for k, v in os.environ.items() if not user_tunes_malloc({k: v})}  # glibc's own default
    for _ in range(args.rounds):
        for setting in runs:
            done = subprocess.run([sys.executable, "-c", ONE_RUN, setting, str(args.photos)], capture_output=True,
                                  text=True, env=env)
            if done.returncode:
                raise SystemExit(f"the {setting} run failed:\n{done.stderr}")
            runs[setting].append(json.loads(done.stdout.strip().splitlines()[-1]))
    same = runs["default"][0]["psnr"] == runs["kept"][0]["psnr"]  # where memory comes from changes no result
    rows = {s: {k: statistics.median(r[k] for r in rs) for k in ("wall_s", "user_s", "system_s")}
            for s, rs in runs.items()}
    ratio = rows["kept"]["wall_s"] / rows["default"]["wall_s"]
    cpu = f"{processor()}, {os.cpu_count()} cores"
    git = git_revision()
    result = {"command": f"python benchmarks/allocator.py --rounds {args.rounds} --photos {args.photos}",
              "git": git, "machine": cpu, "rows": rows, "wall_ratio_kept_over_default": ratio, "same_psnr": same}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "allocator.json").write_text(json.dumps(result, indent=2))
    table = ["| allocator | wall s | user s | system s |", "|---|---|---|---|"]
    table += [f"| {s} | {r['wall_s']:.1f} | {r['user_s']:.1f} | {r['system_s']:.1f} |" for s, r in rows.items()]
    summary = f"kept / default wall-clock: **{ratio:.2f}**; the same PSNR on every photograph: {same}"
    note = [f"# The allocator on a link ({args.photos} bundled photographs, AWGN 10 dB, CBR 1/48, PyTorch backend)",
            "", f"    {result['command']}", "",
            f"Machine: {cpu}; lamsc at git {git}. Medians of {args.rounds} alternating rounds,",
            "each setting in its own process (benchmarks/allocator.py says how).", "", *table, "", summary, ""]
    (args.out / "allocator.md").write_text("\n".join(note))
    print("\n".join(table + [summary]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
