"""Latency and energy per transmitted image: ``profile_link(ProfileConfig(...)) -> ProfileResult``.

Per image: bits sent, what the receiver got (PSNR, SSIM), per-stage latency and energy per transmitted
image = compute energy of the transmitter + radio energy of its transmission, for lamsc and for JPEG.

Over a digital radio (Wi-Fi, LTE, NB-IoT, LoRa) lamsc sends in its digital mode where the deployment has an
entropy model (a bundle's, or the one beside a checkpoint): the kept features quantised and range-coded
(lamsc.semcom.entropy), the payload a transport block at the radio's MCS for the SNR, whose BLER is at most
1%, so it is scored as delivered. Without one, the analog payload's bytes are sent as that message, and
``lamsc_link`` says so. Over an analog radio (sdr) lamsc sends analog, over the channel, charged its uses.

The JPEG baseline is matched in quality: the smallest JPEG whose PSNR reaches what lamsc delivered, sent
digitally at the best MCS for the SNR. Its compute energy is its encoding, measured with the same meter.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

import numpy as np
from PIL import Image

from lamsc.errors import UserError
from lamsc.runtime.backends import is_bundle
from lamsc.runtime.deployment import Deployment, describe
from lamsc.runtime.energy import EnergyMeter, energy_meter
from lamsc.runtime.latency import Latency, stage_latencies
from lamsc.runtime.radio import RULE as RADIO_RULE, Radio, radio as radio_preset
from lamsc.semcom import metrics
from lamsc.semcom.image_codecs import MAX_SIDE
from lamsc.semcom.mcs import TransportBlock, choose_mcs
from lamsc.semcom.channels import Channel
from lamsc.semcom.entropy import DEFAULT_STEP, DigitalMode, nearest_step
from lamsc.semcom.images import NamedImage, bundled_photos, iter_images
from lamsc.semcom.metrics import strict_json
from lamsc.semcom.transmission import Receiver, Transmitter, lost_image, transmit

Track = Callable[..., Iterable]  # (items, description=...) -> the same items, showing progress (rich's track)


@dataclass
class ProfileConfig:
    """What to profile, where, over which link and radio.

    ``source``: a bundle folder (from ``lamsc export``), a model checkpoint, or None for the shipped model;
    ``backend``: torch | onnxruntime | tensorrt (None: onnxruntime for a bundle, torch for a checkpoint);
    ``images``: files, folders, bundled photographs by name or NamedImages (None: all bundled photographs);
    ``energy``: a meter of lamsc.runtime.energy.METERS; ``radio``: a preset of lamsc.runtime.radio.RADIOS;
    ``device_profile``: the device whose declared power the model meter uses; ``channel``
    (lamsc.semcom.channels.CHANNELS) at ``snr_db`` dB; ``sam_checkpoint``: the SKB for a checkpoint (a bundle
    carries its own); ``repeats``: timed runs per image after one warm-up run; files go to ``out``; ``kb``:
    knowledge base folders the receiver retrieves from (lamsc.retrieval; its time is part of ``receive``, and
    each image's ``kb`` says what it used); ``step``: the digital mode's quantiser step over a digital radio
    (the nearest of lamsc.semcom.entropy.STEPS). A bad value raises UserError naming the fix.
    """

    source: Union[str, Path, None] = None
    backend: str | None = None
    images: Sequence[Union[str, Path, NamedImage]] | None = None
    energy: str = "auto"
    radio: str = "wifi"
    device_profile: str = "cpu"
    snr_db: float = 10.0
    channel: str = "awgn"
    sam_checkpoint: Union[str, Path, None] = None
    repeats: int = 5
    out: Union[str, Path] = Path("lamsc-out/profile")
    kb: Sequence[Union[str, Path]] | None = None
    step: float = DEFAULT_STEP

    def __post_init__(self):
        if self.repeats < 1:
            raise UserError(f"repeats {self.repeats}: give at least 1 timed run per image (--repeats)")
        nearest_step(self.step)  # UserError for a step that is not positive


@dataclass(repr=False)
class ProfileResult:
    """Per image (``images``: one dict each, lamsc's and JPEG's bits, PSNR, latency in ms and energy in J),
    their means (``summary``), what measured them (``backend``, ``segmenter``, ``energy_meter``: its source
    and whether it is an estimate), how lamsc crossed the radio (``lamsc_link``) and the files written
    (``files``: profile.json, energy.png)."""

    source: str
    backend: str
    segmenter: str
    channel: str
    snr_db: float
    radio: dict
    energy_meter: dict
    cpu_threads: int
    cpu_count: int | None
    summary: dict
    images: list[dict]
    files: dict = field(default_factory=dict)
    lamsc_link: str = ""

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def __repr__(self) -> str:
        lamsc = self.summary["lamsc"]
        return (f"ProfileResult({len(self.images)} images on {self.backend}, {self.channel} {self.snr_db:g} dB: "
                f"{lamsc['total_j'] * 1e3:.1f} mJ per image, compute energy from {self.energy_meter['source']})")


def profile_link(config: ProfileConfig, track: Track | None = None) -> ProfileResult:
    """Profile each image through the deployment: bits, quality, per-stage latency (median/p90/p99) and
    energy per transmitted image, beside quality-matched JPEG; writes profile.json and energy.png to
    ``config.out``. Raises UserError on a bundle or model that cannot be opened, an unknown meter, radio or
    channel, or an image over JPEG's longest side (the baseline cannot encode it)."""
    ch = Channel(config.channel, config.snr_db)
    rad = radio_preset(config.radio)
    source = str(config.source) if config.source else None
    deployment = Deployment(source, config.backend or ("onnxruntime" if is_bundle(source) else "torch"),
                            str(config.sam_checkpoint) if config.sam_checkpoint else None)
    backend, _, segmenter = deployment.open()
    meter = energy_meter(config.energy, config.device_profile,
                         cores=backend.threads if config.device_profile == "cpu" else 1,
                         work_on=backend.processor)
    retriever = None
    if config.kb:
        from lamsc.retrieval.refine import Retriever  # knowledge bases search with faiss and fuse with torch

        retriever = Retriever.open(config.kb)
    entropy = None if rad.analog else deployment.entropy_model()
    digital = DigitalMode(entropy, nearest_step(config.step)) if entropy is not None else None
    tx = Transmitter(backend, segmenter, snr_db=config.snr_db, digital=digital)
    rx = Receiver(backend, refine=retriever, entropy=entropy)
    photos = ([i for i in config.images if isinstance(i, NamedImage)]
              + list(iter_images([i for i in config.images if not isinstance(i, NamedImage)], bundled_names=True))
              if config.images else bundled_photos())
    for item in photos:  # each image is compared with JPEG, which has a longest side
        if max(item.pixels.shape[:2]) > MAX_SIDE["jpeg"]:
            h, w = item.pixels.shape[:2]
            raise UserError(f"{item.name} is {w} x {h} pixels: profile compares it with JPEG, which encodes at most "
                            f"{MAX_SIDE['jpeg']} pixels a side; crop or cut it into tiles")
    track = track or (lambda items, description: items)
    rows = [profile_image(item, tx, rx, ch, meter, rad, config.repeats, 1, seed=k)
            for k, item in enumerate(track(photos, description=f"profiling on {backend.name}"))]
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    result = ProfileResult(describe(source), backend.name, segmenter.name, ch.name, config.snr_db,
                           {"preset": config.radio, "name": rad.name, "source": rad.source, "rule": RADIO_RULE},
                           {"source": meter.source, "estimate": meter.estimate}, backend.threads,
                           os.cpu_count(), summary(rows), rows,
                           {"json": str(out / "profile.json"), "png": str(out / "energy.png")},
                           lamsc_link(rad, digital))
    (out / "profile.json").write_text(json.dumps(strict_json(result.to_dict()), indent=2, allow_nan=False))
    plot_energy(rows, out / "energy.png", f"{backend.name}, {ch.name} {config.snr_db:g} dB, {rad.name}; "
                                          f"compute energy: {meter.source}")
    return result


def lamsc_link(radio: Radio, digital: DigitalMode | None) -> str:
    """How lamsc crosses ``radio`` in a profile, in words (see the module's docstring)."""
    if radio.analog:
        return "analog: the kept features as symbols over the channel, charged its channel uses"
    if digital is not None:
        return (f"digital mode: features quantised at step {digital.step:g} and range-coded, one transport block "
                "at the radio's MCS for the SNR (BLER <= 1%: scored as delivered), charged its bits")
    return ("analog payload as a digital message (no entropy model for the digital mode: fit one with "
            "`lamsc density fit` and export again), charged its bits at the radio's MCS")


def repeat_measured(fn, meter: EnergyMeter, repeats: int, warmup: int) -> tuple[list, float, str, bool]:
    """Run ``fn`` warm-up times, then at least ``repeats`` times and for at least the meter's minimum window
    (several updates of its counter) inside one energy window.
    -> (results, joules per run, meter source, estimate?)"""
    for _ in range(warmup):
        fn()
    results = []
    with meter.measure() as window:
        t0 = time.perf_counter()
        while len(results) < repeats or time.perf_counter() - t0 < meter.min_window_s:
            results.append(fn())
    r = window.reading
    return results, r.joules / len(results), r.source, r.estimate


def jpeg_matched(image: np.ndarray, target_psnr: float) -> tuple[bytes, int, float]:
    """The smallest-quality JPEG whose PSNR reaches ``target_psnr`` (quality 95 if none does)."""
    pil = Image.fromarray(image)

    def encode(q: int) -> tuple[bytes, float]:
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=q)
        data = buf.getvalue()
        return data, float(metrics.psnr(image, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))

    lo, hi, best = 1, 95, None
    while lo <= hi:  # PSNR grows with quality, so bisect
        mid = (lo + hi) // 2
        data, p = encode(mid)
        if p >= target_psnr:
            best, hi = (data, mid, p), mid - 1
        else:
            lo = mid + 1
    if best is None:
        data, p = encode(95)
        best = (data, 95, p)
    return best


def radio_mcs(radio: Radio, snr_db: float):
    return choose_mcs(snr_db, radio.max_bits_per_use)


def profile_image(item: NamedImage, tx, rx, channel: Channel, meter: EnergyMeter, radio: Radio,
                  repeats: int = 5, warmup: int = 1, seed: int = 0) -> dict:
    sends, compute_j, source, estimate = repeat_measured(lambda: tx.send(item.pixels), meter, repeats, warmup)
    stages = stage_latencies([s.seconds for s in sends])
    payload = sends[-1].payload
    if tx.digital is not None:  # one transport block at an MCS of BLER <= 1%: what the receiver decodes is it
        h, w = item.pixels.shape[:2]
        bits = metrics.bits(payload)
        reaches = math.isfinite(radio.link_airtime_s(channel.snr_db, bits, 0))
        rec = (rx.receive(payload, h, w) if reaches else
               lost_image(h, w, f"{channel.snr_db:g} dB is below the radio's most robust MCS"))
        got = dict(bits=bits, uses=TransportBlock.carrying(len(payload), radio_mcs(radio, channel.snr_db)).channel_uses,
                   psnr=float(metrics.psnr(item.pixels, rec.image)),
                   ssim=float(metrics.ssim(item.pixels, rec.image)), lost=rec.lost)
    else:
        result = transmit(item.pixels, tx, rx, channel, seed)
        got = dict(bits=result.bits, uses=result.channel_uses, psnr=result.psnr, ssim=result.ssim,
                   lost=result.reconstruction.lost)
    # what a Retriever used for the image the PSNR scores: the timed receives below decode the payload as sent,
    # without the channel's noise, and would overwrite it; a lost image reached no retrieval (``last`` is older)
    retriever = getattr(rx, "refine", None)
    retrieved = (dict(retriever.last) if retriever is not None and getattr(retriever, "last", None)
                 and not got["lost"] else None)
    rx_times, rx_gpu = [], []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        rx.receive(payload, *item.pixels.shape[:2])
        rx_times.append(time.perf_counter() - t0)
        if getattr(rx, "gpu_seconds", None) is not None:
            rx_gpu.append(rx.gpu_seconds)
    gpu = {k: Latency.of([s.gpu_seconds[k] for s in sends]).to_dict() for k in sends[-1].gpu_seconds}
    if rx_gpu:
        gpu["decode"] = Latency.of(rx_gpu).to_dict()
    uses = got["uses"]
    radio_j = radio.link_energy_j(channel.snr_db, got["bits"], uses)
    total_t = sum(s.median_ms for k, s in stages.items() if k != "total")
    ours = {
        "bits": got["bits"], "channel_uses": uses, "psnr": got["psnr"], "ssim": got["ssim"],
        "lost": got["lost"], "kept_ratio": sends[-1].kept_ratio,
        "latency": {**{k: v.to_dict() for k, v in stages.items()}, "receive": Latency.of(rx_times).to_dict()},
        # the graphs' own time on the GPU (CUDA events): inputs in, network, outputs out; host work excluded
        "gpu_latency": gpu or None,
        "energy": {"compute_j": compute_j, "radio_j": radio_j, "total_j": compute_j + radio_j,
                   # the meter sees the whole send; stages share it by their median time
                   "stages_j": {k: compute_j * v.median_ms / total_t for k, v in stages.items() if k != "total"},
                   "airtime_s": radio.link_airtime_s(channel.snr_db, got["bits"], uses),
                   "source": source, "estimate": estimate},
        "pack_backend": sends[-1].pack_backend,
        # what was sent, byte for byte: two installs or backends agree when these do
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    if retrieved is not None:  # a Retriever: what the link's receive used, and its seconds
        ours["kb"] = {"used": retrieved["used"], "agreement": retrieved["agreement"], "score": retrieved["score"],
                      "seconds": retrieved["seconds"]}
    data, quality, psnr = jpeg_matched(item.pixels, got["psnr"])
    jpeg_runs, jpeg_j, _, _ = repeat_measured(lambda: jpeg_matched_encode(item.pixels, quality), meter, repeats, 1)
    mcs = radio_mcs(radio, channel.snr_db)
    jpeg_uses = TransportBlock.carrying(len(data), mcs).channel_uses
    jpeg_radio = radio.link_energy_j(channel.snr_db, 8 * len(data), jpeg_uses)
    baseline = {"codec": "jpeg", "quality": quality, "bits": 8 * len(data), "psnr": psnr,
                "ssim": float(metrics.ssim(item.pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))),
                "mcs": mcs.name, "channel_uses": jpeg_uses,
                "latency": {"encode": Latency.of(jpeg_runs).to_dict()},
                "energy": {"compute_j": jpeg_j, "radio_j": jpeg_radio, "total_j": jpeg_j + jpeg_radio,
                           "source": source, "estimate": estimate}}
    return {"image": item.name, "lamsc": ours, "jpeg": baseline}


def jpeg_matched_encode(image: np.ndarray, quality: int) -> float:
    """One JPEG encode at ``quality``; returns its seconds (what the baseline transmitter computes)."""
    t0 = time.perf_counter()
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    return time.perf_counter() - t0


def summary(rows: list[dict]) -> dict:
    def mean(path):
        vals = []
        for r in rows:
            v = r
            for k in path:
                v = v[k]
            vals.append(v)
        return metrics.mean_defined(vals)  # SSIM is undefined (NaN) on images under its window

    return {
        "images": len(rows),
        "lamsc": {"bits": mean(("lamsc", "bits")), "psnr": mean(("lamsc", "psnr")), "ssim": mean(("lamsc", "ssim")),
                  "latency_total_median_ms": mean(("lamsc", "latency", "total", "median_ms")),
                  "compute_j": mean(("lamsc", "energy", "compute_j")), "radio_j": mean(("lamsc", "energy", "radio_j")),
                  "total_j": mean(("lamsc", "energy", "total_j"))},
        "jpeg": {"bits": mean(("jpeg", "bits")), "psnr": mean(("jpeg", "psnr")),
                 "compute_j": mean(("jpeg", "energy", "compute_j")), "radio_j": mean(("jpeg", "energy", "radio_j")),
                 "total_j": mean(("jpeg", "energy", "total_j"))},
        "lost": sum(r["lamsc"]["lost"] for r in rows),
    }


def plot_energy(rows: list[dict], path, title: str) -> None:
    """Per image, side by side: compute and radio energy of lamsc and of quality-matched JPEG. Not stacked:
    on the log scale they need (compute can be 1000x radio) a stacked segment's height would not be its size."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    x = np.arange(n)
    bars = [(key, part, colour)
            for key, colours in (("lamsc", ("#1f77b4", "#aec7e8")), ("jpeg", ("#d62728", "#ff9896")))
            for part, colour in zip(("compute", "radio"), colours)]
    width = 0.8 / len(bars)
    inches = max(6, 1.1 * n + 2)
    fig, ax = plt.subplots(figsize=(inches, 4.5))
    values = []
    for k, (key, part, colour) in enumerate(bars):
        mj = np.array([r[key]["energy"][f"{part}_j"] for r in rows]) * 1e3
        values.append(mj)
        ax.bar(x + (k - (len(bars) - 1) / 2) * width, mj, width, color=colour, label=f"{key} {part}")
    ax.set_yscale("log")
    positive = np.concatenate(values)
    positive = positive[positive > 0]
    if positive.size:  # from below the smallest bar, with room above the tallest for the legend
        ax.set_ylim(positive.min() / 3, positive.max() * 30)
    ax.set_xticks(x, [r["image"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("energy per transmitted image (mJ)")
    ax.set_title("\n".join(textwrap.wrap(title, int(inches * 11))), fontsize=8)  # 8 pt: about 11 characters an inch
    ax.legend(fontsize=8, ncol=len(bars), loc="upper center", frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
