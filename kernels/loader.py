"""Find and load liblamsc_kernels.so with ctypes.

Why ctypes and not pycuda: the runtime already holds its tensors in torch, so the kernels take raw
device pointers (``tensor.data_ptr()``) and torch's current stream; nothing is copied and no second CUDA
context is made. (pycuda stays the tool for TensorRT's bindings in lamsc.runtime.)
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path

log = logging.getLogger("lamsc.kernels")
LIBRARY = "liblamsc_kernels.so"


def library_path() -> Path | None:
    """$LAMSC_KERNELS_LIB, else the CMake build folder of the source tree, else beside this package."""
    env = os.environ.get("LAMSC_KERNELS_LIB")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "build" / LIBRARY, here / LIBRARY]
    return next((p for p in candidates if p.is_file()), None)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The loaded kernel library, or None (logged, not raised) when it is not built."""
    path = library_path()
    if path is None:
        log.info("%s not built (cmake -S . -B build && cmake --build build); using the reference kernels", LIBRARY)
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        log.warning("could not load %s (%s); using the reference kernels", path, e)
        return None
    p, i, f = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.lamsc_asc_pack.argtypes = [p, p, i, i, i, i, i, p, p, p, p, p, p, p, p]
    lib.lamsc_asc_unpack.argtypes = [p, p, i, i, i, i, i, f, p, p, p, p, p]
    for fn in (lib.lamsc_asc_pack, lib.lamsc_asc_unpack):
        fn.restype = i
    return lib


def check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA error {status}")


def stream_of(tensor) -> ctypes.c_void_p:
    import torch

    return ctypes.c_void_p(torch.cuda.current_stream(tensor.device).cuda_stream)
