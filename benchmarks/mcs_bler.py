"""Block error rate of each MCS of lamsc.semcom.mcs.MCS_TABLE on AWGN, and the threshold the table uses.

For each scheme, from the Shannon limit of its efficiency upwards in 0.5 dB steps: random information bits
through ``lamsc.semcom.mcs.ldpc_qam`` (the link the baselines use), 25 codewords at a time, a codeword
failing when any decided bit differs from the one sent (what its CRC-24B detects). A point stops early
after 3 failures; the threshold is the first point with at most 2 failures in ``--codewords`` (200).
At the threshold, ``--codewords`` more of the longest codeword a transport block rate-matches to
(lamsc.semcom.mcs.TransportBlock: just under 2 x 4800 coded bits) check that it decodes as well.

    python benchmarks/mcs_bler.py --out benchmarks/results

Writes mcs_bler.csv (every point measured) and mcs_bler.md.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import torch

from lamsc.semcom.channels import Channel
from lamsc.semcom.mcs import CODEWORD, MCS_TABLE, ldpc_qam

BATCH = 25


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--codewords", type=int, default=200, help="codewords at the threshold point")
    p.add_argument("--only", nargs="*", default=None, help="MCS names to measure (default: all)")
    return p


def measure(mcs, snr_db: float, codewords: int, g: torch.Generator, n: int = CODEWORD) -> tuple[int, int]:
    """(failures, codewords of ``n`` coded bits sent) at ``snr_db``; stops after 3 failures."""
    failures = sent = 0
    while sent < codewords and failures <= 2:
        info = torch.randint(0, 2, (BATCH, mcs.information_bits(n)), generator=g).float()
        decided = ldpc_qam(info, mcs, Channel("awgn", snr_db), g, n)
        failures += int((decided != info).any(1).sum())
        sent += BATCH
    return failures, sent


def main(argv: list[str] | None = None) -> int:
    args = setup_args().parse_args(argv)
    rows = []
    for mcs in MCS_TABLE:
        if args.only and mcs.name not in args.only:
            continue
        g = torch.Generator().manual_seed(0)
        snr = math.ceil(2 * 10 * math.log10(2 ** mcs.efficiency - 1)) / 2  # Shannon limit, up to the grid
        while True:
            failures, sent = measure(mcs, snr, args.codewords, g)
            rows.append({"mcs": mcs.name, "snr_db": snr, "failures": failures, "codewords": sent,
                         "bler": failures / sent, "codeword_bits": CODEWORD})
            print(f"{mcs.name:10s} {snr:5.1f} dB: {failures}/{sent}", file=sys.stderr, flush=True)
            if failures <= 2 and sent >= args.codewords:
                break
            snr += 0.5
        n = 2 * CODEWORD - mcs.bits_per_symbol
        failures, sent = measure(mcs, snr, args.codewords, g, n)
        rows.append({"mcs": mcs.name, "snr_db": snr, "failures": failures, "codewords": sent,
                     "bler": failures / sent, "codeword_bits": n})
        print(f"{mcs.name:10s} {snr:5.1f} dB, {n} bits: {failures}/{sent}", file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "mcs_bler.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Block error rate of each MCS on AWGN (5G LDPC + QAM, Sionna)", "",
             "`python benchmarks/mcs_bler.py --out benchmarks/results`: the thresholds of "
             "lamsc.semcom.mcs.MCS_TABLE, 20 belief-propagation iterations.", "",
             f"| MCS | bits/use | threshold dB (BLER <= 1%) | measured, {CODEWORD}-bit codewords: SNR dB "
             "failures/codewords | at the threshold, the longest codeword: bits, failures/codewords |",
             "|---|---|---|---|---|"]
    for mcs in MCS_TABLE:
        pts = [r for r in rows if r["mcs"] == mcs.name and r["codeword_bits"] == CODEWORD]
        long = [r for r in rows if r["mcs"] == mcs.name and r["codeword_bits"] != CODEWORD]
        if pts:
            lines.append(f"| {mcs.name} | {mcs.efficiency:.3f} | {pts[-1]['snr_db']:g} | "
                         + ", ".join(f"{r['snr_db']:g}: {r['failures']}/{r['codewords']}" for r in pts)
                         + f" | {long[0]['codeword_bits']}, {long[0]['failures']}/{long[0]['codewords']} |")
    (args.out / "mcs_bler.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
