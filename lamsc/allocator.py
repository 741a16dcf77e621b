"""How the process's C allocator treats large freed blocks: kept for reuse rather than handed back to the kernel.

PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold (at most 32 MiB,
adjusted at run time) with a fresh ``mmap`` and unmaps it when the tensor dies, so every large activation of the
codec at full resolution costs the kernel a page fault per 4 KiB page, each page zeroed. Raising the mmap and
trim thresholds (``mallopt(3)``: M_MMAP_THRESHOLD, M_TRIM_THRESHOLD) keeps those blocks in the heap for the next
tensor of that size; ``benchmarks/allocator.py`` measures what it saves on a link. The price is a resident set
that does not shrink while the process lives, which suits a process that does lamsc's work and ends: a
command, a test worker, a benchmark.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int takes: blocks up to 2 GiB stay in the heap
CAPPED_BYTES = 32 << 20  # the most glibc before 2.35 accepts as a threshold on 64-bit (HEAP_MAX_SIZE / 2)


def keep_freed_memory() -> int:
    """Keep freed blocks in the heap for reuse (glibc ``mallopt``), for the rest of the process.

    Returns the size (bytes) up to which blocks are now kept: 2 GiB, or 32 MiB where glibc caps the threshold
    there; 0, changing nothing, where the C library is not glibc (macOS, Windows, musl) or where the
    environment already tunes malloc (a ``MALLOC_*`` variable, or ``glibc.malloc`` in ``GLIBC_TUNABLES``): a
    setting the user made wins, so ``MALLOC_TRIM_THRESHOLD_=131072`` gives a memory-tight device glibc's own
    behaviour back. The ``lamsc`` command calls it at start, as does each endpoint process of
    ``lamsc.runtime.link``; a Python program that runs the codec on large images can call it once as well.
    """
    if not sys.platform.startswith("linux") or user_tunes_malloc() or not _glibc():
        return 0
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    kept = next((n for n in (KEEP_BYTES, CAPPED_BYTES) if mallopt(M_MMAP_THRESHOLD, n)), 0)
    if kept:
        mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)  # the trim threshold has no cap
    return kept


def user_tunes_malloc(environ: dict[str, str] | None = None) -> bool:
    """Whether ``environ`` (default: this process's) sets any of glibc's malloc tunables."""
    environ = os.environ if environ is None else environ
    return any(k.startswith("MALLOC_") for k in environ) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # a C library that does not name itself
        return False
