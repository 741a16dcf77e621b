"""lamsc.kernels: custom CUDA kernels for the masking, with the references they must match.

- ``asc_pack`` / ``asc_unpack``: ASC's threshold + quantise + compaction into the payload, and its inverse;
  bit-identical to ``lamsc.semcom.payload``.
- ``mask_postprocess``: SAM's segment-everything post-processing (threshold, stability score, box, area)
  in one pass per mask.

Each runs the CUDA kernel when its input is on a CUDA device and liblamsc_kernels.so is built
(``cmake -S . -B build && cmake --build build``), else the reference; the result names which ran.
Importing this package never initialises CUDA.
"""

from lamsc.kernels.asc import Packed, asc_pack, asc_unpack
from lamsc.kernels.loader import library, library_path
from lamsc.kernels.mask import MaskStats, mask_postprocess

__all__ = ["MaskStats", "Packed", "asc_pack", "asc_unpack", "library", "library_path", "mask_postprocess"]
