"""Fitting a model's entropy model (lamsc.semcom.entropy) on photographs: the frozen model's kept features at
unit power, the density's rate minimised at quantiser steps drawn over ``STEPS``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from lamsc.semcom.entropy import STEPS, EntropyModel, FactorizedDensity, effective_snr, tables_from
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.transmission import model_inputs


def kept_features(model: LamscModel, images: Iterable[np.ndarray], segmenter: Segmenter,
                  snrs: Iterable[float] | None = None) -> list[np.ndarray]:
    """Per channel, the values (float32) the model's transmitter sends at unit power, with ASC on and with
    ASC off (every channel then has values, also those ASC rarely keeps), over ``images`` (H, W, 3) uint8
    encoded at each of ``snrs`` (dB; default: the effective SNRs of every fourth step of ``STEPS``, the ones
    the digital mode encodes at)."""
    config = model.config
    snrs = sorted({effective_snr(s, config.snr_range) for s in STEPS[::4]}) if snrs is None else list(snrs)
    per_channel: list[list[np.ndarray]] = [[] for _ in range(config.channels)]
    model.eval()
    with torch.no_grad():
        for image in images:
            x, masks = model_inputs(image, segmenter.segment(image), config.segments)
            for snr in snrs:
                for asc in (True, False):
                    enc = model.encode(x, masks, torch.tensor([float(snr)]), asc=asc)
                    z, kept = enc["z"][0].float(), enc["mask"][0] > 0
                    for c in range(config.channels):
                        per_channel[c].append(z[c][kept[c]].numpy())
    return [np.concatenate(v) if v else np.zeros(0, np.float32) for v in per_channel]


def fit_entropy_model(model: LamscModel, images: Iterable[np.ndarray], segmenter: Segmenter, steps: int = 400,
                      batch: int = 2048, lr: float = 1e-2, seed: int = 0,
                      progress: Callable[[int, int, float], None] | None = None) -> EntropyModel:
    """A factorised density for ``model``'s features, fitted on ``images`` ((H, W, 3) uint8, segmented by
    ``segmenter``) by ``steps`` Adam steps of ``batch`` values per channel.

    Loss: the mean rate in bits per value, -log2(F(z + Δu + Δ/2) - F(z + Δu - Δ/2)), u ~ U(-1/2, 1/2) and Δ
    log-uniform over ``STEPS`` (Ballé et al. 2018's uniform-noise relaxation at every step). ``progress(step,
    steps, bits)`` is called after each step. Raises ValueError when a channel was never kept.
    """
    t0 = time.perf_counter()
    images = list(images)
    values = kept_features(model, images, segmenter)
    if any(len(v) == 0 for v in values):
        raise ValueError("a feature channel was never kept on these images; fit on more (or larger) photographs")
    g = torch.Generator().manual_seed(seed)
    data = [torch.from_numpy(v) for v in values]
    density = FactorizedDensity(model.config.channels)
    optimiser = torch.optim.Adam(density.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    lo, hi = math.log(STEPS[0]), math.log(STEPS[-1])
    bits = float("nan")
    for step in range(1, steps + 1):
        z = torch.stack([v[torch.randint(len(v), (batch,), generator=g)] for v in data])       # (C, batch)
        delta = torch.exp(lo + (hi - lo) * torch.rand(1, batch, generator=g))
        noisy = z + delta * (torch.rand(z.shape, generator=g) - 0.5)
        loss = -torch.log2(density.bin_probability(noisy, delta).clamp(min=1e-9)).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        bits = float(loss.detach())
        if progress is not None:
            progress(step, steps, bits)
    density.eval()
    largest = np.array([float(np.abs(v).max()) for v in values])
    provenance = {"images": len(images), "values": int(sum(len(v) for v in values)), "steps": steps,
                  "batch": batch, "lr": lr, "seed": seed, "final_bits_per_value": round(bits, 4),
                  "segmenter": getattr(segmenter, "name", type(segmenter).__name__),
                  "seconds": round(time.perf_counter() - t0, 1)}
    return EntropyModel(density, tables_from(density, largest), largest, provenance)
