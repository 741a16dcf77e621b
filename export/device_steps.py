"""The steps that run a bundle on a Jetson, written beside its graphs: build_engines.sh and JETSON.md."""

from __future__ import annotations

from pathlib import Path

from lamsc.export.tensorrt import trtexec_command

JETPACK6_INDEX = "https://pypi.jetson-ai-lab.io/jp6/cu126"  # Jetson AI Lab's wheels for JetPack 6 (CUDA 12.6)


def write_device_steps(out: Path, manifest: dict) -> None:
    """build_engines.sh (trtexec, TensorRT 10) and JETSON.md beside the graphs.

    The engines hold the networks only: the ASC pack runs after the transmitter engine (lamsc's CUDA kernel
    where liblamsc_kernels.so is built and PyTorch sees the GPU, else the NumPy reference), so no TensorRT
    plugin is loaded.
    """
    from lamsc.export.bundle import Bundle  # bundle.py calls this module once its manifest is written

    bundle = Bundle(out, manifest)
    lines = ["#!/bin/sh", "# Build the TensorRT engines on the device that will run them (JetPack 6: TensorRT 10.3).",
             "set -e", 'cd "$(dirname "$0")"', "mkdir -p engines"]
    for name in bundle.graphs:
        lines.append(trtexec_command(bundle.path(name).name, f"engines/{name}.engine", bundle.spec(name),
                                     bundle.precision, timing_cache="engines/timing.cache"))
    script = out / "build_engines.sh"
    script.write_text("\n".join(lines) + "\n")
    script.chmod(0o755)
    problems = bundle.tensorrt_problems()
    warning = ("\n**TensorRT cannot build this bundle** (" + "; ".join(problems[:3]) + "): skip step 3 and run "
               "it with `--backend onnxruntime`, or export it again for TensorRT.\n" if problems else "")
    (out / "JETSON.md").write_text(f"""# Running this bundle on a Jetson

Precision: {manifest['precision']}; graphs: {', '.join(bundle.graphs)}; made by lamsc {manifest['lamsc']}.
{warning}
1. Install, in your home folder on the Jetson (JetPack 6.x: Python 3.10, CUDA 12.6, TensorRT 10.3). The venv sees
   JetPack's own `tensorrt` Python package. PyTorch comes as JetPack's CUDA build from Jetson AI Lab's index,
   installed first so that lamsc's requirement is already met and PyPI's CPU build never replaces it; ONNX
   Runtime's GPU build (`onnxruntime-gpu`, from the same index) goes in last, over the CPU `onnxruntime` that
   lamsc's requirements bring, since both install the same module:
   ```
   python3 -m venv --system-site-packages ~/lamsc-venv && . ~/lamsc-venv/bin/activate
   pip install torch torchvision --index-url {JETPACK6_INDEX}
   pip install "lamsc[gpu,jetson]"
   pip uninstall -y onnxruntime && pip install --no-deps onnxruntime-gpu --index-url {JETPACK6_INDEX}
   ```
2. Optional, for the CUDA masking kernels, in lamsc's source tree (the folder with CMakeLists.txt and kernels/,
   copied anywhere on the Jetson, here `~/lamsc`):
   ```
   cd ~/lamsc
   cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=87 && cmake --build build -j
   export LAMSC_KERNELS_LIB=~/lamsc/build/liblamsc_kernels.so
   ```
   Without them the masking runs on lamsc's NumPy reference, with the same payload bytes.
3. In this bundle's folder, build the engines on this device: `sh build_engines.sh` (or
   `python -m lamsc.export.tensorrt .` through TensorRT's Python API). Engines are tied to this GPU and
   TensorRT version: never copy them to another device.
4. In this bundle's folder, profile it:
   `lamsc profile . --backend tensorrt --energy jetson --radio wifi --images DIR`.
   `--backend onnxruntime` runs the same graphs without TensorRT.

`lamsc` checks every file against manifest.json before it runs; a changed file is refused.
""")
