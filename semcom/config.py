"""A lamsc model's configuration: what rebuilds it, round-trips through JSON, and needs no torch (an edge
runtime reads it from a bundle's manifest); with the few shape rules both ends share."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import numpy as np

from lamsc.errors import UserError

CONFIG_VERSION = 2  # 2: GDN/IGDN stages, residual blocks at the decoder's bottleneck
DOWNSAMPLING = 8  # the encoder's three stride-2 stages
DEFAULT_MODEL = Path(__file__).parent / "default_model" / "lamsc-default"
# The channel budget the field quotes its Kodak figures at (Deep JSCC, SwinJSCC: CBR 1/48), and the one lamsc's
# shipped default and its baselines are compared at (benchmarks/results/snr_sweep.md).
REFERENCE_CBR = 1 / 48


class JsonConfig:
    """A dataclass of plain values with a ``version`` field, written to and read from JSON. Subclasses set
    ``NAME`` (what the error calls it), ``VERSION`` and ``REFRESH`` (how to get a file of this version);
    reading a file of another version raises UserError saying so. Tuple fields come back as tuples."""

    NAME: ClassVar[str] = "config"
    VERSION: ClassVar[int] = 1
    REFRESH: ClassVar[str] = "use the lamsc version that wrote it"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str):
        d = json.loads(text)
        if d.get("version") != cls.VERSION:
            raise UserError(f"{cls.NAME} version {d.get('version')} is not {cls.VERSION}; {cls.REFRESH}")
        for f in fields(cls):
            if str(f.type).startswith("tuple") and f.name in d:
                d[f.name] = tuple(d[f.name])
        return cls(**d)


@dataclass
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a model; round-trips through JSON."""

    NAME, VERSION, REFRESH = "model config", CONFIG_VERSION, "retrain it or use the lamsc version that wrote it"

    channels: int = 16          # feature maps at 1/8 resolution; CBR with everything sent = channels / 384
    width: int = 128
    num_levels: int = 8         # ASC depth levels per position
    segments: int = 8           # K: the largest K SKB segments enter ASI
    value_bits: int = 8         # payload quantisation of the kept features
    classes: list[str] = field(default_factory=list)  # classification head, if any
    seg_classes: int = 0        # segmentation head classes (0 = none)
    snr_range: tuple[float, float] = (0.0, 20.0)
    trained: dict = field(default_factory=dict)  # provenance: data, steps, segmenter, recipe
    architecture: dict = field(default_factory=dict)  # pruned widths (semcom.architecture); {} = as built
    version: int = CONFIG_VERSION

    @property
    def last_run(self) -> dict:
        """The training run that made the model, without the chain of runs before it (``trained`` keeps that,
        under ``init_trained``): what a report names the model by."""
        return {k: v for k, v in self.trained.items() if k != "init_trained"}


def pad_to_multiple(x, multiple: int = DOWNSAMPLING, mode: str = "reflect"):
    """Pad the last two axes (H, W) of an array or tensor up to a multiple, at the bottom and right: "reflect"
    for images (edge replication where the image is smaller than the pad), "constant" (zeros) for masks.
    NumPy arrays stay NumPy, torch tensors torch."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"  # reflection needs more pixels than the pad
    if isinstance(x, np.ndarray):
        width = [(0, 0)] * (x.ndim - 2) + [(0, ph), (0, pw)]
        return np.pad(x, width, mode={"replicate": "edge"}.get(mode, mode))
    from torch.nn import functional as F  # a tensor: torch is there

    return F.pad(x, (0, pw, 0, ph), mode=mode)


def power_normalise(z, mask):
    """Features (B, C, h, w) kept where ``mask`` (same shape, 0/1) is set, scaled so each image's kept values
    have unit mean square (paired into complex symbols: unit power), the rest zero. Arrays or tensors, in
    their own dtype."""
    kept = z * mask
    b = mask.shape[0]
    # Means rather than sums over the map: a count of kept values passes float16's 65504 on large images.
    kept_fraction = mask.reshape(b, -1).mean(1)
    if isinstance(mask, np.ndarray):  # at least one value per image counts as kept
        kept_fraction = np.maximum(kept_fraction, 1.0 / mask[0].size)
    else:
        kept_fraction = kept_fraction.clamp(min=1.0 / mask[0].numel())
    power = (kept * kept).reshape(b, -1).mean(1) / kept_fraction
    return kept / ((power + 1e-12) ** 0.5).reshape(-1, 1, 1, 1)


def cbr(channel_uses: int, height: int, width: int) -> float:
    """Channel bandwidth ratio: complex channel uses per source dimension (3 H W)."""
    return channel_uses / (3 * height * width)
