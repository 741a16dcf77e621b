"""The deployment runtime without torch (``lamsc[edge]``) against the full install, on one bundle.

    python benchmarks/edge_runtime.py --edge-python .venv-edge/bin/python [--repeats 5] [--out benchmarks/results]

Exports the shipped model as an fp32 bundle (fallback SKB), then runs ``lamsc profile BUNDLE --backend
onnxruntime`` on the bundled photographs with this interpreter (the full install) and with ``--edge-python``
(a venv holding ``pip install lamsc[edge]`` alone), one after the other. Reports per photograph whether the
payload bytes agree (SHA-256), each install's median send (segment + encode + pack) and receive times, and the
size of each venv on disk. Writes edge_runtime.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from lamsc.export.bundle import write_bundle
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.model import load_model

from provenance import git_revision


def profile(python: list[str], bundle: Path, repeats: int, out: Path) -> dict:
    done = subprocess.run([*python, "profile", str(bundle), "--backend", "onnxruntime", "--repeats", str(repeats),
                           "--energy", "model", "--json", "--out", str(out)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout)["results"]


def venv_bytes(python: str) -> int:
    """Bytes on disk of the environment ``python`` runs in (its sys.prefix)."""
    prefix = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return sum(f.stat().st_size for f in Path(prefix).rglob("*") if f.is_file() and not f.is_symlink())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--edge-python", required=True, help="python of a venv with lamsc[edge] alone")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    edge = str(Path(args.edge_python).absolute())  # not resolved: the venv is the link, not the interpreter
    probe = subprocess.run([edge, "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        raise SystemExit(f"{edge} imports torch: give the python of a venv with lamsc[edge] alone")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = write_bundle(load_model(), Path(tmp) / "bundle", "fp32", images=bundled_photos(["chelsea"])).root
        runs = {"full": profile([sys.executable, "-m", "lamsc.cli"], bundle, args.repeats, Path(tmp) / "full"),
                "edge": profile([edge, "-m", "lamsc.cli"], bundle, args.repeats, Path(tmp) / "edge")}
    rows = []
    for full, small in zip(runs["full"]["images"], runs["edge"]["images"]):
        row = {"image": full["image"],
               "same_payload": full["lamsc"]["payload_sha256"] == small["lamsc"]["payload_sha256"]}
        for name, r in (("full", full), ("edge", small)):
            row[f"{name}_send_ms"] = r["lamsc"]["latency"]["total"]["median_ms"]
            row[f"{name}_receive_ms"] = r["lamsc"]["latency"]["receive"]["median_ms"]
            row[f"{name}_psnr"] = r["lamsc"]["psnr"]
        rows.append(row)
    sizes = {"full": venv_bytes(sys.executable), "edge": venv_bytes(edge)}
    git = git_revision()
    meta = {"git": git, "repeats": args.repeats, "backend": runs["edge"]["backend"],
            "segmenter": runs["edge"]["segmenter"], "cpu_threads": runs["edge"]["cpu_threads"], "venv_bytes": sizes}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "edge_runtime.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    same = sum(r["same_payload"] for r in rows)
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k.endswith("_ms")}
    lines = [f"# lamsc[edge] (no torch) against the full install ({meta['backend']}, {meta['cpu_threads']} CPU "
             f"threads, git {git})", "",
             f"`python benchmarks/edge_runtime.py --edge-python .venv-edge/bin/python --repeats {args.repeats}`", "",
             f"Venv on disk: edge {sizes['edge'] / 2**30:.2f} GiB, full {sizes['full'] / 2**30:.2f} GiB (the full one "
             "also holds the test extras). Payload bytes the same on "
             f"{same} of {len(rows)} photographs. SKB: {meta['segmenter']}.", "",
             "| image | same payload | full send ms | edge send ms | full receive ms | edge receive ms | PSNR |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['image']} | {'yes' if r['same_payload'] else 'NO'} | {r['full_send_ms']:.0f} | "
              f"{r['edge_send_ms']:.0f} | {r['full_receive_ms']:.0f} | {r['edge_receive_ms']:.0f} | "
              f"{r['edge_psnr']:.2f} |" for r in rows]
    lines += [f"| mean | | {mean['full_send_ms']:.0f} | {mean['edge_send_ms']:.0f} | {mean['full_receive_ms']:.0f} | "
              f"{mean['edge_receive_ms']:.0f} | |"]
    (args.out / "edge_runtime.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:5] + lines[-1:]))
    return 0 if same == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
