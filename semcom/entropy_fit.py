"""Fitting a model's entropy model (lamsc.semcom.entropy) on photographs: the frozen model's kept features at
unit power, the density's rate minimised at quantiser steps drawn over ``STEPS``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from lamsc.semcom import metrics
from lamsc.semcom.backend import Backend
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.entropy import (CONTEXT_PRIOR, CONTEXTS, STEPS, DigitalMode, EntropyModel, ProbabilityTables,
                                  contexts, effective_snr, kept_by_channel)
from lamsc.semcom.model import LamscModel
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.segments import Segments
from lamsc.semcom.transmission import Receiver, as_backend, is_grey, model_inputs, pack_features, sent_features

_TAIL = 1e-9  # the smallest probability a table gives, before the coder's own fixed-point floor
# fractions of feature values the digital mode may send at a step; with the default's 8 ASC levels every
# position keeps at least 1/8
KEPT_CANDIDATES = (0.15, 0.2, 0.3, 0.45, 0.65)
# the photographs' longer side, pixels, when counting contexts and fitting kept fractions (the bundled ones' size)
KEPT_FIT_SIDE = 512


class FactorizedDensity(nn.Module):
    """Per-channel monotone CDFs F_c (Ballé et al. 2018, appendix 6.1) over real inputs (C, N).

    ``filters``: hidden widths of the chain (the paper's and CompressAI's (3, 3, 3, 3)); ``init_scale``: the
    spread the initial CDF covers, in input units.
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3, 3), init_scale: float = 4.0):
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1.0 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1.0 / scale / widths[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.channels = channels

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """f_c(x): inputs (C, N) -> logits of F_c (C, N), increasing in x."""
        h = x.unsqueeze(1)
        for i, (m, b) in enumerate(zip(self.matrices, self.biases)):
            h = torch.matmul(F.softplus(m), h) + b
            if i < len(self.factors):
                h = h + torch.tanh(self.factors[i]) * torch.tanh(h)
        return h.squeeze(1)

    def bin_probability(self, centre: torch.Tensor, width: torch.Tensor | float) -> torch.Tensor:
        """F_c(centre + width/2) - F_c(centre - width/2) for inputs (C, N), computed on the side of the median
        where the difference of sigmoids does not cancel."""
        lower, upper = self.logits(centre - width / 2), self.logits(centre + width / 2)
        sign = -torch.sign(lower + upper).detach()
        return (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()


def tables_from(density: FactorizedDensity, largest: np.ndarray, steps: tuple[float, ...] = STEPS) -> ProbabilityTables:
    """Probability tables of ``density`` at each of ``steps``, the same in every context bin; channel c's support
    covers 1.25 x ``largest[c]`` (C,), the largest magnitude the density was fitted on. The tails beyond the
    support fall into its end bins (what the clip rule sends there)."""
    low, size = (np.zeros((len(steps), density.channels), np.int64) for _ in range(2))
    pmf = []
    with torch.no_grad():
        for s, step in enumerate(steps):
            tops = [max(1, math.ceil(1.25 * float(v) / step)) for v in largest]
            table = np.zeros((density.channels, CONTEXTS, 2 * max(tops) + 1), np.float32)
            for c, top in enumerate(tops):
                q = torch.arange(-top, top + 1, dtype=torch.float64)
                edges = (torch.cat([q - 0.5, q[-1:] + 0.5]) * step).float()
                cdf = torch.sigmoid(density.logits(edges[None].expand(density.channels, -1))[c].double())
                cdf[0], cdf[-1] = 0.0, 1.0  # the clip rule: the tails belong to the end bins
                p = (cdf[1:] - cdf[:-1]).clamp(min=_TAIL).numpy()
                table[c, :, :2 * top + 1] = p / p.sum()
                low[s, c], size[s, c] = -top, 2 * top + 1
            pmf.append(table)
    return ProbabilityTables(tuple(steps), low, size, pmf)


def with_contexts(prior: ProbabilityTables, counts: list[np.ndarray], strength: float = CONTEXT_PRIOR
                  ) -> ProbabilityTables:
    """Tables whose (step, channel, bin) distribution is ``counts`` of each symbol seen in that context (S arrays
    shaped as ``prior.pmf``) plus ``strength`` pseudo-counts spread as ``prior`` says: the posterior mean of a
    Dirichlet prior, the density where a context was rarely seen."""
    pmf = []
    for p, n, size in zip(prior.pmf, counts, prior.size):
        inside = np.arange(p.shape[-1]) < size[:, None, None]  # (C, 1, n): each channel's support
        table = np.where(inside, n + strength * p.astype(np.float64), 0.0)
        pmf.append((table / table.sum(-1, keepdims=True)).astype(np.float32))
    return ProbabilityTables(prior.steps, prior.low.copy(), prior.size.copy(), pmf)


def count_contexts(model: LamscModel, tables: ProbabilityTables, images: Iterable[np.ndarray],
                   segmenter: Segmenter, candidates: tuple[float, ...] = KEPT_CANDIDATES) -> list[np.ndarray]:
    """How often each symbol is coded in each (step, channel, context bin) (S arrays shaped as ``tables.pmf``,
    float64): the digital mode's features of ``images`` ((H, W, 3) uint8, scaled to at most ``KEPT_FIT_SIDE`` px)
    at every step of ``tables`` and every kept fraction of ``candidates``, quantised and binned as the coder does."""
    config = model.config
    backend, counts = as_backend(model), [np.zeros(p.shape) for p in tables.pmf]
    channels, L = config.channels, config.num_levels
    placeholder = EntropyModel({}, tables, np.zeros(channels), {})
    with torch.no_grad():
        for image in images:
            image = _at_most(image, KEPT_FIT_SIDE)
            encoded = transmitter_per_step(backend, config, image, segmenter.segment(image), tables.steps)
            for s, (step, (_, out)) in enumerate(zip(tables.steps, encoded)):
                for kept_fraction in candidates:
                    _, levels, z = sent_features(out, config, image.shape[:2], True, None,
                                                 DigitalMode(placeholder, step, kept_fraction))
                    kept = kept_by_channel(levels, channels, L)
                    q = placeholder.quantise(z, step)
                    bins = contexts(q, kept, step)
                    c = np.nonzero(kept)[0]
                    np.add.at(counts[s], (c, bins[kept], q[kept] - tables.low[s, c]), 1)
    return counts


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
            x, masks = map(torch.from_numpy, model_inputs(image, segmenter.segment(image), config.segments))
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
    ``segmenter``) by ``steps`` Adam steps of ``batch`` values per channel, then its context tables counted on
    the same images (``count_contexts``, ``with_contexts``).

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
                  "segmenter": getattr(segmenter, "name", type(segmenter).__name__)}
    prior = tables_from(density, largest)
    counts = count_contexts(model, prior, images, segmenter)
    provenance |= {"context_values": int(sum(n.sum() for n in counts)), "context_prior": CONTEXT_PRIOR,
                   "seconds": round(time.perf_counter() - t0, 1)}
    weights = {k: v.detach().float().numpy() for k, v in density.state_dict().items()}
    return EntropyModel(weights, with_contexts(prior, counts), largest, provenance)


def fit_kept_fractions(model: LamscModel, entropy: EntropyModel, images: Iterable[np.ndarray],
                       segmenter: Segmenter, candidates: tuple[float, ...] = KEPT_CANDIDATES,
                       progress: Callable[[int, int], None] | None = None) -> tuple[float, ...]:
    """Per quantiser step of ``entropy``'s tables, the fraction of ``candidates`` whose operating points lie
    closest to each photograph's rate-quality frontier: every (step, fraction) pair gives a point (log bits
    per pixel, PSNR in dB) per image (``rate_quality_grid``); an image's frontier is the upper concave hull of
    its points, flat past its best PSNR (``frontier``); each step takes the fraction with the smallest median
    PSNR deficit below the frontiers, or the fraction of the next finer step where that is smaller, so that the
    rate falls as the step grows (``steps`` ascend). Then each photograph's steps trace close to the best curve
    the fractions offer, the curve its BD-rate is measured on (Bjøntegaard, VCEG-M33). The median, not the
    mean: a flat synthetic image decoded at 50-70 dB swings by tens of dB between neighbouring steps and would
    decide alone. Raises ValueError for no images."""
    bpp, quality = rate_quality_grid(model, entropy, images, segmenter, candidates, progress)
    log_rate = np.log(bpp)
    deficit = np.stack([frontier(r.ravel(), q.ravel())(r) - q for r, q in zip(log_rate, quality)])
    best = [candidates[int(np.argmin(row))] for row in np.median(deficit, axis=0)]
    return tuple(float(k) for k in np.minimum.accumulate(best))


def rate_quality_grid(model: LamscModel, entropy: EntropyModel, images: Iterable[np.ndarray],
                      segmenter: Segmenter, candidates: tuple[float, ...] = KEPT_CANDIDATES,
                      progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The digital mode's bits per pixel and PSNR (dB) on each of ``images`` ((H, W, 3) uint8, scaled down to
    ``KEPT_FIT_SIDE`` on the longer side; error-free link), each (images, steps, candidates): at every
    quantiser step of ``entropy``'s tables and every kept fraction of ``candidates``. ``progress(done,
    total)`` follows each image. Raises ValueError for no images."""
    images = [_at_most(image, KEPT_FIT_SIDE) for image in images]
    if not images:
        raise ValueError("fitting kept fractions needs at least one photograph")
    steps, backend, rx = entropy.tables.steps, as_backend(model), Receiver(model, entropy=entropy)
    bpp, quality = (np.zeros((len(images), len(steps), len(candidates))) for _ in range(2))
    with torch.no_grad():
        for i, image in enumerate(images):
            (h, w), segments = image.shape[:2], segmenter.segment(image)
            encoded = transmitter_per_step(backend, model.config, image, segments, steps)
            for s, (step, (snr, out)) in enumerate(zip(steps, encoded)):
                for k, kept in enumerate(candidates):
                    payload = pack_features(out, model.config, (h, w), snr, segments,
                                            digital=DigitalMode(entropy, step, kept), grey=is_grey(image)).payload
                    bpp[i, s, k] = 8 * len(payload) / (h * w)
                    quality[i, s, k] = float(metrics.psnr(image, rx.receive(payload, h, w).image))
            if progress is not None:
                progress(i + 1, len(images))
    return bpp, quality


def transmitter_per_step(backend: Backend, config: ModelConfig, image: np.ndarray, segments: Segments,
                         steps: Iterable[float]) -> list[tuple[float, dict]]:
    """For each of ``steps``, the effective SNR (dB) the digital mode encodes ``image`` at and the transmitter
    graph's outputs there; the graph runs once per distinct SNR (the fine steps share the top one)."""
    x, masks = model_inputs(image, segments, config.segments)
    encoded: dict[float, dict] = {}
    for step in steps:
        snr = effective_snr(step, config.snr_range)
        if snr not in encoded:
            encoded[snr] = backend.run("transmitter", {"image": x, "masks": masks,
                                                       "snr_db": np.array([snr], np.float32)})
    return [(snr, encoded[snr]) for snr in (effective_snr(step, config.snr_range) for step in steps)]


def frontier(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The upper concave hull of points (``x``, ``y``) (1-D, same length, at least one), held flat past its
    highest point: the line segments between points, at their best, at ``x`` or less. Returns it as a function of
    an array of x inside the points' range."""
    order = np.lexsort((y, x))
    hull: list[tuple[float, float]] = []
    for p in zip(x[order].tolist(), y[order].tolist()):  # Andrew's monotone chain, upper half
        if hull and hull[-1][0] == p[0]:  # the same x: the higher y (sorted last) stands for both
            hull.pop()
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])) >= 0:
            hull.pop()
        hull.append(p)
    hx, hy = np.array([p[0] for p in hull]), np.array([p[1] for p in hull])
    top = hx[int(np.argmax(hy))]
    return lambda at: np.interp(np.minimum(at, top), hx, hy)


def _at_most(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 scaled (Lanczos) so its longer side is at most ``side`` pixels."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    scale = side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                    Image.LANCZOS))
