"""Build a bundle's TensorRT engines on the device that will run them, through TensorRT's Python API:

    python -m lamsc.export.engines BUNDLE

(the same engines as the bundle's build_engines.sh, which uses trtexec).
"""

from __future__ import annotations

from pathlib import Path

from lamsc.errors import UserError
from lamsc.export.bundle import Bundle, load_bundle
from lamsc.export.tensorrt import build_engine


def build_bundle_engines(bundle: Bundle) -> list[Path]:
    """Build every graph of a loaded bundle into ``BUNDLE/engines/`` (on the device that will run them)."""
    problems = bundle.tensorrt_problems()
    if problems:  # refuse before the minutes a build takes, with what export checked
        hint = (" Export it again with --int8-for tensorrt." if bundle.manifest.get("int8_for") == "onnxruntime"
                else "")
        raise UserError(f"{bundle.root} has graphs TensorRT cannot build ({'; '.join(problems[:3])}).{hint}")
    out = bundle.root / "engines"
    out.mkdir(exist_ok=True)
    return [build_engine(bundle.path(name), out / f"{name}.engine", bundle.spec(name), bundle.precision,
                         timing_cache=out / "timing.cache") for name in bundle.graphs]


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m lamsc.export.engines BUNDLE")
    try:
        engines = build_bundle_engines(load_bundle(sys.argv[1]))
    except UserError as e:
        sys.exit(f"error: {e}")
    print("\n".join(map(str, engines)))
