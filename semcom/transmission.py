"""One image across the link: ``Transmitter.send(image) -> payload`` and ``Receiver.receive(...)``, one of
each whatever runs their networks (PyTorch, ONNX Runtime, TensorRT: lamsc.semcom.backend).

On an analog channel the payload's kept values travel as analog symbols (two per channel use) and its
side information (header, depth map, CRC) as a digital control message at the coded rate of the MCS for the
SNR (lamsc.semcom.mcs.side_channel_uses), taken as received intact. On a
digital channel every payload bit is modulated, and a payload the CRC rejects is a reported loss.

The digital mode (``Transmitter(digital=DigitalMode(...))``, lamsc.semcom.entropy) entropy-codes the kept
features and sends the whole payload as one transport block over 5G LDPC + QAM (lamsc.semcom.mcs) at the MCS
whose measured BLER is <= 1% at the channel's SNR, the coded link of the separation baseline: a failed
code block loses the payload, shown mid-grey (a payload cut at the first failed block fails its CRC), the
rule the separation baseline applies to a file that cannot be decoded cut.

Everything here around the networks is NumPy on the host, so a deployment runs it without torch
(``lamsc[edge]``); torch comes in with the PyTorch backend, the CUDA pack and the simulated coded link.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lamsc.errors import UserError
from lamsc.kernels.loader import library
from lamsc.semcom import metrics
from lamsc.semcom.asc_levels import DEPTH_BLOCK, block_mean, depth_for_budget, depth_levels, levels_to_mask
from lamsc.semcom.asc_pack import asc_pack, asc_unpack
from lamsc.semcom.backend import Backend
from lamsc.semcom.channels import Channel, analog_form, analog_real, transmit_bits
from lamsc.semcom.config import ModelConfig, cbr, pad_to_multiple, power_normalise
from lamsc.semcom.entropy import DigitalMode, EntropyModel, decode_features, effective_snr, encode_features
from lamsc.semcom.mcs import (MCS, Delivered, TransportBlock, analog_channel_uses, channel_uses, choose_mcs,
                              coded_link, side_channel_uses)
from lamsc.semcom.payload import (FLAG_ENTROPY, Features, Parsed, PayloadError, Unpacked, assemble, depth_map_section,
                                  parse, side_bits, unpack)
from lamsc.semcom.segmenter import Segmenter
from lamsc.semcom.segments import Segments

if TYPE_CHECKING:  # the PyTorch reference; a deployment runs without torch
    import torch

    from lamsc.semcom.model import LamscModel

log = logging.getLogger(__name__)


def segment_masks(segments: Segments, k: int) -> np.ndarray:
    """The k largest segments as float masks (k, H, W), zero-padded when there are fewer."""
    top = segments.largest(k)
    out = np.zeros((k, *segments.image_size), np.float32)
    out[: len(top)] = top.masks
    return out


def image_input(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) -> the networks' input (1, 3, H, W) float32 in [0, 1]."""
    return (np.ascontiguousarray(image.transpose(2, 0, 1), np.float32) / np.float32(255.0))[None]


def output_image(x: np.ndarray) -> np.ndarray:
    """The decoder's output (1, 3, H, W) in [0, 1] (clipped) -> an RGB uint8 image (H, W, 3)."""
    return (np.clip(x[0], 0, 1).transpose(1, 2, 0) * np.float32(255.0)).round().astype(np.uint8)


@dataclass
class Sent:
    payload: bytes
    segments: Segments
    importance: np.ndarray      # (H, W) the ASI map the encoder saw
    kept_ratio: float           # fraction of feature values sent
    value_count: int            # feature values in the payload
    value_bits: int             # payload bits that are feature values
    seconds: dict
    pack_backend: str = ""      # which ASC pack ran: "cuda" or "reference"
    gpu_seconds: dict = field(default_factory=dict)  # stages timed by CUDA events, where a GPU ran them

    @property
    def side_bits(self) -> int:
        """Header, depth map, padding and CRC: what an analog link sends digitally."""
        return 8 * len(self.payload) - self.value_bits


class Transmitter:
    """Segment, integrate, encode, mask and pack one image, with the networks on a backend.

    ``network``: a LamscModel, run eagerly by the PyTorch backend on ``device`` (the reference path), or a
    Backend (lamsc.semcom.backend), such as ONNX Runtime or TensorRT over an exported bundle
    (lamsc.runtime.backends). ASC masking and unit-power normalisation run after the graph, in float32,
    and the pack on the GPU by lamsc.kernels' CUDA kernel where the backend runs on one (bit-identical to
    the NumPy reference used elsewhere); ``pack_backend`` says which ran last.

    ``cbr``: a channel budget, complex channel uses per source dimension (3 H W) on an analog link, the
    side information (with the range-coded depth map's real size) included: ASC's depth map is shifted to
    send the most features that fit (``depth_for_channel_budget``). None: ASC's own choice. Raises UserError
    for a budget without ASC, or one not in (0, 1].

    ``digital``: the digital mode (lamsc.semcom.entropy.DigitalMode): the kept features quantised at its
    step and range-coded, the encoder conditioned on the quantisation noise's SNR; ``transmit`` then sends
    the payload over the coded link. Raises UserError beside a channel budget (the coded link sets the rate
    by the step), beside a kept fraction with ASC off, or for an entropy model of another number of channels.
    """

    def __init__(self, network: LamscModel | Backend, segmenter: Segmenter, asc: bool = True,
                 snr_db: float | None = None, device: str | torch.device = "cpu", cbr: float | None = None,
                 digital: DigitalMode | None = None):
        if cbr is not None and not 0 < cbr <= 1:
            raise UserError(f"a channel budget of CBR {cbr}: give one in (0, 1]")
        if cbr is not None and not asc:
            raise UserError(f"a channel budget of CBR {cbr} needs ASC on (it chooses what to drop); with ASC off "
                            "every feature is sent")
        if digital is not None and digital.kept is not None and not asc:
            raise UserError(f"a kept fraction of {digital.kept:g} chooses which features ASC drops; with ASC off "
                            "every feature is sent: turn ASC on or leave the fraction out")
        if cbr is not None and digital is not None:
            raise UserError("a channel budget (CBR) sizes an analog link; the digital mode's rate is its quantiser "
                            "step: give one or the other")
        self.backend = as_backend(network, device)
        self.config = self.backend.config
        if digital is not None:
            same_channels(digital.entropy, self.config)
        self.segmenter, self.asc, self.snr_db, self.cbr, self.digital = segmenter, asc, snr_db, cbr, digital
        self.pack_device = gpu_or_cpu(self.backend)
        self.pack_backend = ""

    def send(self, image: np.ndarray, snr_db: float | None = None) -> Sent:
        """One image (H, W, 3) uint8 -> the payload and what went into it.

        ``snr_db``: the SNR the encoder adapts to, dB; default the transmitter's own (``transmit`` passes
        the channel's). Raises UserError when neither is given. In the digital mode the encoder adapts to the
        quantisation noise's SNR instead, and ``snr_db`` is not needed. ``seconds``: segment, encode, pack.
        """
        if self.digital is not None:
            snr_db = effective_snr(self.digital.step, self.config.snr_range)
        else:
            snr_db = assumed_snr(self.snr_db, snr_db)
        t0 = time.perf_counter()
        segments = self.segmenter.segment(image)
        t1 = time.perf_counter()
        x, masks = model_inputs(image, segments, self.config.segments)
        out = self.backend.run("transmitter", {"image": x, "masks": masks,
                                               "snr_db": np.array([snr_db], np.float32)})
        self.backend.synchronize()
        t2 = time.perf_counter()
        sent = pack_features(out, self.config, image.shape[:2], snr_db, segments, self.asc, self.pack_device,
                             self.cbr, self.digital, is_grey(image))
        self.pack_backend = sent.pack_backend
        sent.seconds = {"segment": t1 - t0, "encode": t2 - t1, "pack": time.perf_counter() - t2}
        if self.backend.gpu_seconds is not None:
            sent.gpu_seconds = {"encode": self.backend.gpu_seconds}
        return sent


def same_channels(entropy: EntropyModel, config: ModelConfig) -> None:
    """UserError when an entropy model was fitted for features of another number of channels."""
    if entropy.channels != config.channels:
        raise UserError(f"the entropy model codes {entropy.channels} feature channels, the model sends "
                        f"{config.channels}: fit one for this model with `lamsc density fit --model MODEL`")


def as_backend(network: LamscModel | Backend, device: str | torch.device = "cpu") -> Backend:
    """A model becomes the PyTorch backend on ``device``; a backend (anything with ``run``) is taken as it is."""
    if hasattr(network, "run"):
        return network
    from lamsc.semcom.torch_backend import TorchBackend  # a LamscModel: torch is there

    return TorchBackend(network, device=device)


def gpu_or_cpu(backend: Backend) -> str | torch.device:
    """Where the masking runs: the GPU of the backend's graphs when the CUDA kernels are built and torch is
    there to hand them device memory, else "cpu" (the NumPy reference; a GPU without the kernels would only
    copy the features there and back)."""
    if backend.processor != "gpu" or library() is None:
        return "cpu"
    import torch

    device = getattr(backend, "device", None)
    if not torch.cuda.is_available():
        return "cpu"
    return device if isinstance(device, torch.device) and device.type == "cuda" else torch.device("cuda")


def assumed_snr(own: float | None, given: float | None) -> float:
    """The SNR a transmitter encodes for: the one given for this send, else its own; UserError without either."""
    snr_db = given if given is not None else own
    if snr_db is None:
        raise UserError("the transmitter has no SNR to encode for: give Transmitter(snr_db=...), or send through "
                        "transmit(image, tx, rx, channel), which uses the channel's")
    return float(snr_db)


def model_inputs(image: np.ndarray, segments: Segments, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The transmitter's inputs for one image, float32 arrays: the image (1, 3, H', W') in [0, 1] and its k
    largest segment masks (1, k, H', W'), both padded to multiples of 8."""
    x = pad_to_multiple(image_input(image))
    masks = pad_to_multiple(segment_masks(segments, k)[None], mode="constant")
    return x, masks


def transmit_power(features: np.ndarray, levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Features (B, C, h, w) kept to ``levels`` (B, h, w) in 1..L and scaled to unit average power in
    float32, as the radio sends them.

    The model's graph ends before this on purpose: in a reduced precision the power's reduction and scale
    are themselves quantised, so an int8 graph would send off unit power, and over a channel whose noise is
    set for unit power that is free (or lost) SNR.
    """
    features = np.asarray(features, np.float32)
    return power_normalise(features, levels_to_mask(np.asarray(levels), features.shape[1], num_levels))


def pack_features(out: dict, config: ModelConfig, size: tuple[int, int], snr_db: float, segments: Segments | None,
                  asc: bool = True, device: str | torch.device = "cpu", max_cbr: float | None = None,
                  digital: DigitalMode | None = None, grey: bool = False) -> Sent:
    """The transmitter graph's outputs for one image (``features`` (1, C, h, w), ``depth`` (1, 1, h, w),
    ``importance`` (1, 1, H', W')) -> the payload for an image of ``size`` (H, W): ASC levels from the depth
    (all levels with ``asc`` off; shifted to fit a channel budget ``max_cbr``), unit power, then the ASC pack on
    ``device``, or with ``digital`` the quantiser and range coder (on the CPU), its kept fraction as
    ``DigitalMode.kept_fraction`` says. ASC's depth map is sent as its mean over blocks of ``DEPTH_BLOCK``
    positions a side (``block_mean``), which is cheaper to send, as ``lamsc.semcom.payload.depth_map_section``
    writes it (range-coded when that is shorter); ``grey`` marks a greyscale source in the header."""
    h, w = size
    L = config.num_levels
    depth, levels, z = sent_features(out, config, size, asc, max_cbr, digital, snr_db)
    if digital is not None:
        return entropy_pack(out, z, levels, config, size, snr_db, segments, asc, digital, grey)
    packed = asc_pack(z, depth, L, config.value_bits, device)
    depth_map, coded = depth_map_section(packed.levels, L) if asc else (b"", False)
    payload = assemble(h, w, tuple(z.shape), L, config.value_bits, packed.scale, snr_db, depth_map,
                       packed.value_bytes, depth_coded=coded, grey=grey)
    importance = np.asarray(out["importance"][0, 0])[:h, :w]
    return Sent(payload, segments, importance, packed.count / z.size, packed.count,
                packed.count * config.value_bits, {}, packed.backend)


def sent_features(out: dict, config: ModelConfig, size: tuple[int, int], asc: bool = True,
                  max_cbr: float | None = None, digital: DigitalMode | None = None, snr_db: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What ``pack_features`` sends of the transmitter graph's outputs for an image of ``size`` (H, W): ASC's
    depth map (h, w) float32 as sent (all levels with ``asc`` off; else its mean over blocks of ``DEPTH_BLOCK``
    positions, shifted to fit a channel budget ``max_cbr`` at the channel's ``snr_db``, which a budget needs, or
    to the ``digital`` mode's kept fraction), its levels (h, w) in 1..L, and the features (C, h, w) kept to them
    at unit power. ValueError for a budget without an SNR."""
    h, w = size
    L = config.num_levels
    depth = np.asarray(out["depth"][0, 0], np.float32)
    shape = tuple(out["features"].shape[1:])
    if not asc:
        depth = np.ones_like(depth)  # every position at the last level: everything kept
    else:
        depth = block_mean(depth, DEPTH_BLOCK)  # the map the link sends
        if max_cbr is not None:
            if snr_db is None:
                raise ValueError("a channel budget needs the channel's SNR: its side information's rate depends "
                                 "on it")
            depth = depth_for_channel_budget(depth, shape, L, config.value_bits, math.floor(max_cbr * 3 * h * w),
                                             snr_db)
        elif digital is not None and digital.kept_fraction is not None:
            depth = depth_for_budget(depth, L, shape[0] // L, math.floor(digital.kept_fraction * math.prod(shape)))
    levels = depth_levels(depth, L)
    return depth, levels, transmit_power(out["features"], levels[None], L)[0]


def depth_for_channel_budget(depth: np.ndarray, shape: tuple[int, int, int], num_levels: int, value_bits: int,
                             max_uses: int, snr_db: float, rounds: int = 16) -> np.ndarray:
    """ASC's depth map (h, w) in (0, 1) shifted (``lamsc.semcom.asc_levels.depth_for_budget``) so that its
    payload on an analog link at ``snr_db`` (dB), ``lamsc.semcom.mcs.channel_uses`` = values / 2 + the side
    information's uses at the coded rate for the SNR (header, depth map as sent, CRC, value padding), fits
    ``max_uses`` complex channel uses and sends the most features.

    The coded depth map's size depends on the map (and not monotonically), so the value budget is bisected
    between the one that leaves room for the bit-packed map (an upper bound on every map's size: that map
    always fits) and the one that leaves room for no map at all, up to ``rounds`` times or to within a few
    values, each candidate checked with its real coded size; it returns the fitting map with the most
    values. A budget too small for the shallowest map returns the shallowest."""
    L, per_level = num_levels, shape[0] // num_levels

    def value_budget(side: int) -> int:
        # two values per complex channel use; the side information's (and a byte of value padding's) uses
        # come out of the same budget
        return 2 * (max_uses - side_channel_uses(side + 7, snr_db))

    def fitted(max_values: int) -> tuple[np.ndarray, int, bool]:
        shifted = depth_for_budget(depth, L, per_level, max_values)
        levels = depth_levels(shifted, L)
        values = per_level * int(levels.sum())
        side = side_bits(shape, L, depth_map=len(depth_map_section(levels, L)[0]))
        padding = 8 * math.ceil(values * value_bits / 8) - values * value_bits  # sent among the side bits
        return shifted, values, analog_channel_uses(values, side + padding, snr_db) <= max_uses

    lo, hi = value_budget(side_bits(shape, L)), value_budget(side_bits(shape, L, depth_map=0))
    best, most, _ = fitted(lo)
    for _ in range(rounds):
        if hi - lo <= 8 * per_level:
            break
        mid = (lo + hi) // 2
        shifted, values, fits = fitted(mid)
        if fits:
            lo = mid
            if values > most:
                best, most = shifted, values
        else:
            hi = mid
    return best


def entropy_pack(out: dict, z: np.ndarray, levels: np.ndarray, config: ModelConfig, size: tuple[int, int],
                 snr_db: float, segments: Segments | None, asc: bool, digital: DigitalMode, grey: bool = False) -> Sent:
    """The digital mode's payload: header, depth map (with ASC), the range-coded values."""
    h, w = size
    L = config.num_levels
    stream, count = encode_features(digital.entropy, z, levels, L, digital.step)
    depth_map, coded = depth_map_section(levels, L) if asc else (b"", False)
    payload = assemble(h, w, tuple(z.shape), L, 0, digital.step, snr_db, depth_map, stream,
                       entropy_id=digital.entropy.tables.fingerprint, depth_coded=coded, grey=grey)
    importance = np.asarray(out["importance"][0, 0])[:h, :w]
    return Sent(payload, segments, importance, count / z.size, count, 8 * len(stream), {}, "entropy")


@dataclass(repr=False)
class Reconstruction:
    image: np.ndarray            # (H, W, 3) uint8; mid-grey when the payload was lost
    lost: bool = False
    reason: str = ""
    class_probs: np.ndarray | None = None
    seg_map: np.ndarray | None = None
    retrieved: dict | None = None  # what a Refiner used (entries, agreement, label), when it changed the image

    def __repr__(self) -> str:  # the image's shape, not its pixels
        h, w = self.image.shape[:2]
        return f"Reconstruction({h}x{w}{', lost: ' + self.reason if self.lost else ''})"


class Refiner(Protocol):
    """What a receiver may do with what it decoded before handing it over: ``refine(reconstruction, snr_db)``
    returns the same Reconstruction object when it has nothing to add, or a new one (lamsc.retrieval's
    knowledge bases are one). ``snr_db``: the SNR the decoder was told, dB."""

    def __call__(self, reconstruction: Reconstruction, snr_db: float) -> Reconstruction: ...


class Receiver:
    """Unpack (or take the analog link's features), decode and run the task heads, with the networks on a
    backend (``network`` as for Transmitter). The unpack runs lamsc.kernels' CUDA kernel where the backend
    runs on a GPU; ``unpack_backend`` says which ran last, ``gpu_seconds`` the last receiver graph's time on
    the GPU by CUDA events (None off a GPU). ``refine``: a Refiner each decoded image passes through (None:
    the decoder's output as it is); a lost payload is not refined. ``entropy``: the entropy model that reads
    the digital mode's payloads (lamsc.semcom.entropy.load_entropy_model); UserError for one fitted for
    another number of channels."""

    def __init__(self, network: LamscModel | Backend, device: str | torch.device = "cpu",
                 refine: Refiner | None = None, entropy: EntropyModel | None = None):
        self.refine = refine
        self.backend = as_backend(network, device)
        self.config = self.backend.config
        if entropy is not None:
            same_channels(entropy, self.config)
        self.entropy = entropy
        self.unpack_device = gpu_or_cpu(self.backend)
        self.unpack_backend = ""
        self.gpu_seconds = None

    def receive(self, payload: bytes, height: int | None = None, width: int | None = None) -> Reconstruction:
        """A digital payload; damaged or foreign ones come back as a loss (mid-grey of ``height`` x
        ``width``), never an exception. A payload that passed its CRC is noise-free: it is decoded as at
        the top of the model's SNR range; an entropy-coded one (the digital mode) at its quantisation noise's
        SNR (lamsc.semcom.entropy.DigitalMode). UserError for an entropy-coded payload without the entropy
        model that coded it."""
        try:
            parsed = parse(payload)
        except PayloadError as e:
            return lost_image(height or 1, width or 1, str(e))
        if parsed.entropy_id is not None:
            return self.receive_coded(parsed)
        values, self.unpack_backend = asc_unpack(parsed, self.unpack_device)
        return self.decode(values, parsed.levels, parsed.height, parsed.width, self.config.snr_range[1],
                           parsed.grey)

    def receive_coded(self, parsed: Parsed) -> Reconstruction:
        """An entropy-coded payload, checked: dequantised and decoded at the quantisation noise's SNR."""
        fix = "give Receiver(entropy=...) the entropy model beside the transmitter's model (lamsc density fit)"
        if self.entropy is None:
            raise UserError(f"this payload is entropy-coded (the digital mode) and the receiver holds no entropy "
                            f"model: {fix}")
        if parsed.entropy_id != self.entropy.tables.fingerprint:
            raise UserError(f"this payload was coded with probability tables {parsed.entropy_id:08x}, the receiver "
                            f"holds {self.entropy.tables.fingerprint:08x}: {fix}")
        step = parsed.scale
        try:
            values = decode_features(self.entropy, parsed.value_bytes, parsed.levels, parsed.num_levels,
                                     parsed.shape[0], step)
        except ValueError as e:  # a step without tables: another sender's payload
            return lost_image(parsed.height, parsed.width, f"payload cannot be decoded: {e}")
        self.unpack_backend = "entropy"
        return self.decode(values, parsed.levels, parsed.height, parsed.width,
                           effective_snr(step, self.config.snr_range), parsed.grey)

    def receive_features(self, unpacked: Unpacked, snr_db: float) -> Reconstruction:
        """Features that crossed an analog channel at ``snr_db`` (dB), with their side information."""
        f = unpacked.features
        return self.decode(f.values, f.levels, unpacked.height, unpacked.width, snr_db, unpacked.grey)

    def decode(self, values, levels: np.ndarray, height: int, width: int, snr_db: float,
               grey: bool = False) -> Reconstruction:
        """Features (C, h, w) (array or tensor, zeros where nothing arrived) and levels (h, w) in 1..L -> the
        image cropped to ``height`` x ``width``, with the task heads' outputs. ``grey`` (the payload's flag
        for a greyscale source): each pixel shows the mean of its three channels, the closest grey to what
        the decoder made, so that channel noise shows as no colour."""
        if not isinstance(values, np.ndarray) and not getattr(self.backend, "takes_tensors", False):
            values = values.cpu().numpy()  # the CUDA unpack's tensor, for a backend that reads arrays
        out = self.backend.run("receiver", {"z": values[None], "levels": np.asarray(levels, np.int64)[None],
                                            "snr_db": np.array([snr_db], np.float32)})
        self.gpu_seconds = self.backend.gpu_seconds
        rec = reconstruction(out, height, width)
        rec = rec if self.refine is None else self.refine(rec, snr_db)
        if grey:
            rec.image = as_grey(rec.image)
        return rec


def is_grey(image: np.ndarray) -> bool:
    """Whether an (H, W, 3) image is greyscale: R = G = B in every pixel."""
    return bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())


def as_grey(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the same shape, each pixel the rounded mean of its channels in all three: the grey
    nearest the pixel (its orthogonal projection onto R = G = B, rounded to 8 bits)."""
    mean = np.rint(image.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    return np.ascontiguousarray(np.broadcast_to(mean, image.shape))


def reconstruction(out: dict[str, np.ndarray], height: int, width: int) -> Reconstruction:
    """The receiver graph's outputs (arrays, batch of one) cropped to the image's size."""
    rec = Reconstruction(output_image(out["image"][..., :height, :width]))
    if "class_logits" in out:
        logits = np.asarray(out["class_logits"][0], np.float64)
        p = np.exp(logits - logits.max())
        rec.class_probs = (p / p.sum()).astype(np.float32)
    if "seg_logits" in out:
        rec.seg_map = out["seg_logits"][0, :, :height, :width].argmax(0).astype(np.uint8)
    return rec


def lost_image(height: int, width: int, reason: str) -> Reconstruction:
    return Reconstruction(np.full((height, width, 3), 128, np.uint8), lost=True, reason=reason)


def analog_link(payload: bytes, channel: Channel, seed: int | None = None) -> Unpacked:
    """The payload's values through an analog channel as paired symbols; its side information intact."""
    unpacked = unpack(payload)
    f = unpacked.features
    mask = f.kept_mask
    noisy = analog_real(f.values[mask][None], channel, np.random.default_rng(seed))[0]
    values = np.zeros_like(f.values)
    values[mask] = noisy
    unpacked.features = Features(values, f.levels, f.num_levels)
    return unpacked


@dataclass(repr=False)
class LinkResult:
    """One image over one link, and what crossed it.

    ``channel_uses`` (complex) and ``cbr`` = uses / (3 H W) compare every link. What else crossed depends on
    ``link``: "analog" links send values as symbols and only ``side_bits`` (header, depth map, CRC; SoftCast's
    metadata) as bits; "digital" links send ``coded_bits`` at ``mcs`` (uncoded links: the payload's bits).
    ``bits`` is the message the transmitter built (8 x payload bytes; a codec's file), which on an analog
    link does not cross as bits: compare links by channel uses, never by ``bits``.
    """

    name: str                    # the link: "lamsc", "lamsc-no-asc", "separation", "softcast", ...
    reconstruction: Reconstruction
    bits: int
    channel_uses: int
    cbr: float
    kept_ratio: float
    psnr: float
    ssim: float
    ms_ssim: float
    bit_errors: int = 0
    seconds: dict = field(default_factory=dict)
    link: str = "analog"         # "analog" | "digital"
    side_bits: int = 0           # analog: bits sent digitally beside the values
    coded_bits: int = 0          # digital: bits on the air after the channel code
    mcs: str = ""                # digital: modulation and coding ("qpsk-uncoded", "16qam-1/2", ...)
    detail: str = ""             # how the link sent this image (a baseline's codec, size, blocks)

    def __repr__(self) -> str:  # what print() shows: the figures, not the reconstruction's pixels
        s = self.summary()
        return "LinkResult(" + ", ".join(f"{k}={s[k]!r}" for k in s if k != "seconds") + ")"

    def summary(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "bits", "channel_uses", "cbr", "link", "side_bits", "coded_bits",
                                           "mcs", "kept_ratio", "psnr", "ssim", "ms_ssim", "bit_errors", "detail")}
        d["lost"] = self.reconstruction.lost
        d["reason"] = self.reconstruction.reason
        d = {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}
        if self.reconstruction.class_probs is not None:
            d["class_probs"] = [round(float(p), 4) for p in self.reconstruction.class_probs]
        d["seconds"] = {k: round(v, 4) for k, v in self.seconds.items()}
        return d


def deliver(payload: bytes, channel: Channel, receiver: Receiver, height: int, width: int,
            seed: int | None = None) -> tuple[Reconstruction, int]:
    """The channel acting on one payload and the receiver decoding what arrived -> (reconstruction, bit
    errors). Digital: every bit crosses, and a payload the CRC rejects is a loss; analog: the kept values
    cross as symbols, the side information intact. The digital mode's payload (entropy-coded) crosses the
    coded link (``coded_delivery``; bit errors 0: failed code blocks are its errors, said in the loss). A
    payload that cannot be read at all is a loss too."""
    try:
        if is_entropy_coded(payload):
            got, mcs = coded_delivery(payload, channel, seed)
            if not got.complete:
                return lost_image(height, width, f"{got.failed} of {got.blocks} code blocks failed their CRC at "
                                  f"{mcs.name}; shown: mid-grey (no picture)"), 0
            return receiver.receive(got.data, height, width), 0
        if channel.digital:
            received, errors = transmit_bits(payload, channel, seed)
            return receiver.receive(received, height, width), errors
        return receiver.receive_features(analog_link(payload, channel, seed), channel.snr_db), 0
    except PayloadError as e:
        return lost_image(height, width, str(e)), 0


def is_entropy_coded(payload: bytes) -> bool:
    """Whether the header of ``payload`` says it is the digital mode's (entropy-coded; not yet CRC-checked)."""
    return len(payload) > 4 and bool(payload[4] & FLAG_ENTROPY)


def coded_delivery(payload: bytes, channel: Channel, seed: int | None = None) -> tuple[Delivered, MCS]:
    """``payload`` as one transport block over 5G LDPC + QAM on ``analog_form(channel)`` at ``choose_mcs`` of
    the channel's SNR -> (lamsc.semcom.mcs.Delivered, the MCS)."""
    mcs = choose_mcs(channel.snr_db)
    return coded_link(payload, mcs, analog_form(channel), seed), mcs


def transmit(image: np.ndarray, transmitter: Transmitter, receiver: Receiver, channel: Channel,
             seed: int | None = None) -> LinkResult:
    """Send one image over ``channel`` and measure what arrived against what was sent.

    The transmitter encodes for the channel's SNR unless it was built with its own; a different own SNR is
    a deliberate mismatch (an SNR estimate off the true one), said in a warning. UserError for the digital
    mode over a digital (uncoded) channel.
    """
    if transmitter.digital is not None and channel.digital:
        raise UserError(f"the digital mode modulates its own symbols (5G LDPC + QAM): give it an analog channel "
                        f"(awgn, rayleigh), not {channel.name}, which sends a payload's bits uncoded")
    name = ("lamsc" if transmitter.asc else "lamsc-no-asc") + ("-digital" if transmitter.digital else "")
    if transmitter.snr_db is not None and transmitter.snr_db != channel.snr_db:
        log.warning(f"the transmitter encodes for {transmitter.snr_db:g} dB over a {channel.snr_db:g} dB channel "
                    "(leave its snr_db unset to follow the channel)")
    sent = transmitter.send(image, channel.snr_db if transmitter.snr_db is None else None)
    h, w = image.shape[:2]
    t0 = time.perf_counter()
    rec, errors = deliver(sent.payload, channel, receiver, h, w, seed)
    decode_s = time.perf_counter() - t0
    bits = metrics.bits(sent.payload)
    if transmitter.digital is not None:
        mcs = choose_mcs(channel.snr_db)
        block = TransportBlock.carrying(len(sent.payload), mcs)
        uses = block.channel_uses
        crossed = dict(link="digital", coded_bits=block.coded_bits, mcs=mcs.name,
                       detail=f"step {transmitter.digital.step:g}; {block.blocks} code blocks of {block.n} bits")
    else:
        uses = channel_uses(channel, bits, sent.value_count, sent.side_bits)
        crossed = (dict(link="digital", coded_bits=bits, mcs=f"{channel.name.split('-')[1]}-uncoded")
                   if channel.digital else dict(link="analog", side_bits=sent.side_bits))
    return LinkResult(name, rec, bits, uses, cbr(uses, h, w), sent.kept_ratio,
                      float(metrics.psnr(image, rec.image)),
                      *map(float, metrics.ssim_and_ms_ssim(image, rec.image)), errors,
                      {**sent.seconds, "receive": decode_s}, **crossed)
