"""The steps that run a bundle on a Jetson, written beside its graphs: build_engines.sh and JETSON.md.

The engines hold the networks only. The ASC pack (threshold, quantise, compact) runs after the transmitter
engine, as lamsc's CUDA kernel from liblamsc_kernels.so (the library CMakeLists.txt builds) where that is
built and PyTorch sees the GPU, else as lamsc's reference, with the same payload bytes. JETSON.md names two
folders on the device, lamsc's source tree and the bundle's, and each step says which one it runs in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lamsc.export.tensorrt import trtexec_command
from lamsc.kernels.loader import LIBRARY

if TYPE_CHECKING:  # bundle.py calls this module once its manifest is written
    from lamsc.export.bundle import Bundle

JETPACK6_INDEX = "https://pypi.jetson-ai-lab.io/jp6/cu126"  # Jetson AI Lab's wheels for JetPack 6 (CUDA 12.6)
SOURCE_TREE = "~/lamsc"            # where JETSON.md has lamsc's source tree copied on the device
BUILD_DIR = "build"                # the CMake build folder, inside the source tree
CMAKE_MINIMUM = "3.24"             # CMakeLists.txt's cmake_minimum_required
ORIN_ARCH = "87"                   # JetPack 6 runs on Orin only: sm_87
JETPACK_TRTEXEC_DIR = "/usr/src/tensorrt/bin"  # JetPack's trtexec, not on PATH by default


def write_device_steps(bundle: Bundle) -> None:
    """build_engines.sh (trtexec, TensorRT 10) and JETSON.md beside the graphs of ``bundle``."""
    out = bundle.root
    lines = ["#!/bin/sh", "# Build the TensorRT engines on the device that will run them (JetPack 6: TensorRT 10.3).",
             "# Runs in this bundle's folder, wherever it is called from.",
             "set -e", 'cd "$(dirname "$0")"',
             f'command -v trtexec >/dev/null || PATH="$PATH:{JETPACK_TRTEXEC_DIR}"  # where JetPack puts it',
             "mkdir -p engines"]
    for name in bundle.graphs:
        lines.append(trtexec_command(bundle.path(name).name, f"engines/{name}.engine", bundle.spec(name),
                                     bundle.precision, timing_cache="engines/timing.cache"))
    script = out / "build_engines.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    (out / "JETSON.md").write_text(jetson_md(bundle, f"~/{out.name}"))


def jetson_md(bundle, here: str) -> str:
    """The steps on the Jetson for ``bundle``, copied there to the folder ``here``."""
    manifest = bundle.manifest
    library = f"{SOURCE_TREE}/{BUILD_DIR}/{LIBRARY}"
    problems = bundle.tensorrt_problems()
    warning = ("\n**TensorRT cannot build this bundle** (" + "; ".join(problems[:3]) + "): skip step 3 and run "
               "it with `--backend onnxruntime`, or export it again for TensorRT.\n" if problems else "")
    int8 = ("\n   The int8 graphs are quantised already: NNCF (the `compress` extra) is needed only where bundles "
            "are\n   exported, not here." if bundle.precision == "int8" else "")
    sam = ("\n   This bundle segments with SAM graphs, whose mask generation is SAM's own (segment_anything, on "
           "PyTorch):\n   add JetPack's PyTorch from the same index, then segment-anything and OpenCV:\n"
           f"   ```\n   pip install torch torchvision --index-url {JETPACK6_INDEX}\n"
           "   pip install segment-anything opencv-python-headless\n   ```" if bundle.skb["kind"] == "sam" else "")
    return f"""# Running this bundle on a Jetson

Precision: {manifest['precision']}; graphs: {', '.join(bundle.graphs)}; made by lamsc {manifest['lamsc']}.
{warning}
The TensorRT engines hold the networks only. The ASC masking (the pack: threshold, quantise, compact) runs
after the transmitter engine, as lamsc's CUDA kernel from `{LIBRARY}` (step 2); without that library
it runs on lamsc's reference implementation, with the same payload bytes.

On the Jetson (JetPack 6.x: Ubuntu 22.04, Python 3.10, CUDA 12.6, TensorRT 10.3), two folders; each step
says which one it runs in:
- lamsc's source tree (the folder with pyproject.toml, CMakeLists.txt and kernels/), copied to `{SOURCE_TREE}`;
- this bundle's folder (the one holding this file and build_engines.sh), copied to `{here}`.

1. In lamsc's source tree, install lamsc's deployment runtime (`lamsc[edge]`: ONNX Runtime, the fallback
   SKB, the energy meters; no PyTorch) into a venv that sees JetPack's own `tensorrt` Python package.
   ONNX Runtime is the GPU build for JetPack (`onnxruntime-gpu`, from Jetson AI Lab's index), installed
   first: on aarch64 the `edge` extra leaves ONNX Runtime to it, so PyPI's CPU build never replaces it:
   ```
   cd {SOURCE_TREE}
   python3 -m venv --system-site-packages ~/lamsc-venv && . ~/lamsc-venv/bin/activate
   pip install onnxruntime-gpu --index-url {JETPACK6_INDEX}
   pip install ".[edge,gpu,jetson]"
   ```{sam}{int8}
2. Optional, in lamsc's source tree, with the venv active: build `{LIBRARY}` for Orin (sm_{ORIN_ARCH}).
   The kernels work on PyTorch's device memory, so they run where JetPack's PyTorch is installed
   (`pip install torch --index-url {JETPACK6_INDEX}`); without it the pack runs on lamsc's reference.
   CMakeLists.txt needs CMake {CMAKE_MINIMUM} or newer (Ubuntu 22.04's own is 3.22, hence the one from PyPI)
   and JetPack's nvcc, which is not on PATH by default:
   ```
   cd {SOURCE_TREE}
   pip install "cmake>={CMAKE_MINIMUM}"
   export PATH=/usr/local/cuda/bin:$PATH
   cmake -S . -B {BUILD_DIR} -DCMAKE_CUDA_ARCHITECTURES={ORIN_ARCH} && cmake --build {BUILD_DIR} -j
   ```
   This writes `{library}`.
3. In this bundle's folder, build the engines on this device with trtexec (JetPack's, which the script finds
   in {JETPACK_TRTEXEC_DIR} when it is not on PATH):
   ```
   cd {here}
   sh build_engines.sh
   ```
   or, with the venv active, `python -m lamsc.export.engines .` through TensorRT's Python API.
   Engines are tied to this GPU and TensorRT version: never copy them to another device.
4. In this bundle's folder, with the venv active, profile it; `LAMSC_KERNELS_LIB` names the kernel library
   of step 2 (leave that line out if you skipped it):
   ```
   cd {here}
   export LAMSC_KERNELS_LIB={library}
   lamsc profile . --backend tensorrt --energy jetson --radio wifi --images DIR
   ```
   `--backend onnxruntime` runs the same graphs without TensorRT.

`lamsc` checks every file against manifest.json before it runs; a changed file is refused.
"""
