"""lamsc.kernels: custom CUDA kernels for ASC's masking, run after the transmitter's and before the
receiver's networks.

- ``asc_pack_cuda`` / ``asc_unpack_cuda``: ASC's threshold + quantise + compaction into the payload, and its
  inverse; bit-identical to the reference in ``lamsc.semcom.payload``. ``lamsc.semcom.asc_pack`` calls them.

Each runs when its input is on a CUDA device and liblamsc_kernels.so is built
(``cmake -S . -B build && cmake --build build``), and returns None otherwise; the caller then runs the
reference. Importing this package never initialises CUDA, and it imports nothing else of lamsc.
"""

from lamsc.lazy import lazy_exports

_EXPORTS = {
    "asc_pack_cuda": "asc", "asc_pack_torch": "asc", "asc_unpack_cuda": "asc", "library": "loader",
    "library_path": "loader",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
