"""Which counter belongs to the work: the NVML device of a CUDA device, the RAPL zones of the CPU packages.

Both are choices Zeus leaves to its caller: ZeusMonitor reads ``CUDA_VISIBLE_DEVICES`` entries as NVML indices
(wrong when CUDA orders devices differently, and unparsable when they are UUIDs), and it measures every
``intel-rapl:N`` zone, so a laptop's ``psys`` (the whole platform, packages included) would be added to the
package it already contains.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from lamsc.errors import UserError


def cuda_uuid(cuda_index: int) -> str | None:
    """``GPU-…`` UUID of CUDA device ``cuda_index`` as this process numbers it, from PyTorch or cuda-python
    (whichever is installed; the edge runtime may have only the latter); None when neither can tell."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available() and cuda_index < torch.cuda.device_count():
            return f"GPU-{torch.cuda.get_device_properties(cuda_index).uuid}"
    if importlib.util.find_spec("cuda") is not None and importlib.util.find_spec("cuda.bindings") is not None:
        from cuda.bindings import runtime as cudart

        err, props = cudart.cudaGetDeviceProperties(cuda_index)
        if err == cudart.cudaError_t.cudaSuccess:
            b = bytes(props.uuid.bytes)
            h = b.hex()
            return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    return None


def nvml_index(cuda_index: int, nvml) -> int:
    """The NVML index of CUDA device ``cuda_index``.

    By UUID where a CUDA runtime reports one (exact whatever ``CUDA_DEVICE_ORDER`` is); else from
    ``CUDA_VISIBLE_DEVICES`` (an NVML index, or a UUID or its unique prefix, as CUDA accepts); else the same
    index. ``nvml``: the ``pynvml`` module, initialised. Raises UserError when the device does not exist.
    """
    count = nvml.nvmlDeviceGetCount()
    uuids = [_text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
    uuid = cuda_uuid(cuda_index)
    if uuid is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            wanted = str(cuda_index)
        else:
            entries = [e.strip() for e in visible.split(",") if e.strip()]
            if cuda_index >= len(entries):
                raise UserError(f"CUDA device {cuda_index} is not visible (CUDA_VISIBLE_DEVICES={visible}): "
                                "meter a device that runs the work (--device cuda:N with N below "
                                f"{len(entries)})")
            wanted = entries[cuda_index]
        if wanted.isdigit():
            if int(wanted) >= count:
                raise UserError(f"NVML sees {count} GPU(s), so there is no GPU {wanted}: check nvidia-smi -L")
            return int(wanted)
        uuid = wanted
    found = [i for i, u in enumerate(uuids) if u.startswith(uuid)]
    if len(found) != 1:
        raise UserError(f"CUDA device {cuda_index} ({uuid}) matches {len(found)} of NVML's GPUs "
                        f"({', '.join(uuids)}): name one GPU (nvidia-smi -L lists their UUIDs)")
    return found[0]


def rapl_package_zones(rapl_dir: Path) -> list[tuple[int, str]]:
    """(position among the top-level ``intel-rapl:N`` zones in N order, zone name) of each CPU package.

    Zones are chosen by their ``name`` (``package-N``): ``psys`` (platform) already contains the packages, and
    subzones (``core``, ``uncore``, ``dram``) are parts of them.
    """
    zones = sorted((z for z in rapl_dir.glob("intel-rapl:*") if z.name.count(":") == 1),
                   key=lambda z: int(z.name.split(":")[1]))
    packages = []
    for position, zone in enumerate(zones):
        try:
            name = (zone / "name").read_text().strip()
        except OSError:
            continue
        if name.startswith("package"):
            packages.append((position, name))
    return packages


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
