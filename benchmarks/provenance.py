"""Where a benchmark ran, recorded beside each of its figures: the git revision and the processor."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path


def git_revision() -> str:
    """The checkout's short commit hash; "" outside a git checkout or without git."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent)
    except OSError:
        return ""
    return done.stdout.strip()


def processor(device=None) -> str:
    """What computed: a CUDA ``device``'s name (a torch.device or string), else the CPU's model name from
    /proc/cpuinfo, else the architecture (platform.processor() is empty on most Linux systems)."""
    if device is not None and str(device).startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor() or platform.machine())
