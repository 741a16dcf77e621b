"""How the process's C allocator treats large freed blocks: kept for reuse rather than handed back to the kernel.

PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold (at most 32 MiB,
adjusted at run time) with a fresh ``mmap`` and unmaps it when the tensor dies, so every large activation of the
codec at full resolution costs the kernel a page fault per 4 KiB page, each page zeroed. Raising the mmap and
trim thresholds (``mallopt(3)``: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) keeps those blocks in the heap for the next
tensor of that size; ``benchmarks/allocator.py`` measures what it saves on a link. The price is a resident set
that does not shrink while the process lives, which suits a command or a worker that runs one job.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
USER_SETTINGS = {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"}
KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int takes: blocks up to 2 GiB stay in the heap


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to 2 GiB in the heap for reuse (glibc ``mallopt``), for the rest of the process.

    Returns True when both thresholds were set; False, changing nothing, where the C library is not glibc
    (macOS, Windows, musl) or where the environment already tunes malloc (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``): a setting the user made wins, so
    ``MALLOC_TRIM_THRESHOLD_=131072`` gives a memory-tight device glibc's own behaviour back. The ``lamsc``
    command calls it at start; a Python program that runs the codec on large images can call it once as well.
    """
    if not sys.platform.startswith("linux") or USER_SETTINGS & set(os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # no libc found, or one without mallopt (musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
