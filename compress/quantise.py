"""INT8 of a PyTorch module with NNCF: fake-quantised, what quantisation-aware fine-tuning starts from.

The int8 a deployment runs is the exported graph's ONNX Q/DQ form (lamsc.export.quantise), with the same
settings.
"""

from __future__ import annotations

import os
from typing import Iterable

from lamsc.export.quantise import nncf_settings


def quantise_torch(module, calibration: Iterable[tuple], transformer: bool = False, subset_size: int = 300):
    """NNCF INT8 post-training quantisation of a PyTorch module (fake-quantised: weights and activations
    are rounded to int8 grids inside the float graph), calibrated on ``calibration`` input tuples.

    This is what quantisation-aware fine-tuning starts from, and how the accuracy of int8 is checked
    before export; deployment runs the ONNX QDQ form from ``quantise_onnx``.
    """
    # NNCF compiles its PyTorch extension on first use; on a loaded 2-core machine that passes its
    # default time limit, so wait for it instead.
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "0")
    import nncf

    samples = list(calibration)
    # Divisions stay in float: NNCF would quantise a guarded divisor (a segment's area clamped to a tiny
    # minimum) to zero, and an empty segment then gives 0/0 = NaN through the whole transmitter.
    keep_float = nncf.IgnoredScope(types=["div"], validate=False)
    return nncf.quantize(module.eval(), nncf.Dataset(samples, transform_func=tuple), ignored_scope=keep_float,
                         **nncf_settings(samples, transformer, subset_size))
