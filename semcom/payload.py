"""The payload: the bytes that really cross the link, and the reference pack/unpack of the kept features.

Layout (version 1, big-endian):

    offset  size  field
    0       3     magic b"LSC"
    3       1     version (1)
    4       1     flags: bit 0 = ASC on (a depth map follows); bit 1 = SNR field valid;
                  bit 2 = entropy-coded values (the digital mode, below); bit 3 = range-coded depth map;
                  bit 4 = grey source (R = G = B in every pixel: the receiver shows the mean of its channels)
    5       2     image height        7  2  image width
    9       1     feature channels C  10 1  depth levels L (C divisible by L)
    11      2     feature height h    13 2  feature width w
    15      1     value bits b (2..16)
    16      4     quantiser scale (float32): values are q * scale / (2^(b-1) - 1)
    20      1     SNR the transmitter assumed (int8 dB)
    21      ...   depth map, if flags bit 0: per position (raster order) its level - 1 in ceil(log2 L) bits;
                  with flag bit 3 instead a 4-byte count n of 32-bit words, then n big-endian words of its
                  range-coded stream (lamsc.semcom.depth_code)
    ...     ...   values: per position, its first k = level * C / L channels, b bits each (offset binary)
    end-4   4     CRC-32 of everything before it

Entropy-coded payloads (flag bit 2; lamsc.semcom.entropy) keep the header and depth map: value bits is 0,
the quantiser scale field holds the quantiser step Δ (values are q * Δ at unit feature power), and the
values are a 4-byte fingerprint of the probability tables (big-endian) followed by the range-coded stream of
the integers q, channel after channel, each channel's kept positions in raster order (whole 32-bit words).

The transmitter writes whichever depth map is shorter (``depth_map_section``): coded unless coding would not
save anything (small or noise-like maps, or L > 16).

Bit fields are packed MSB first and padded with zeros to a whole byte. Every part of the payload is
covered by the CRC, so any single flipped bit (and any burst up to 32 bits) is detected.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from lamsc.errors import UserError
from lamsc.semcom.depth_code import MAX_LEVELS, decode_levels, encode_levels

MAGIC = b"LSC"
VERSION = 1
_HEADER = struct.Struct(">3sBBHHBBHHBfb")
FLAG_ASC = 1
FLAG_SNR = 2
FLAG_ENTROPY = 4
FLAG_DEPTH_CODED = 8
FLAG_GREY = 16


class PayloadError(UserError):
    """A payload that is damaged, truncated or not a lamsc payload at all."""


@dataclass
class Features:
    """What the transmitter's encoder and mask decided: features (C, h, w) and a depth level per position.

    levels (h, w) int in 1..L: position p keeps its first levels[p] * C / L channels; L everywhere = all kept.
    """

    values: np.ndarray
    levels: np.ndarray
    num_levels: int

    @property
    def kept_mask(self) -> np.ndarray:
        c = self.values.shape[0]
        depth = self.levels * (c // self.num_levels)
        return np.arange(c)[:, None, None] < depth[None]

    @property
    def kept_count(self) -> int:
        return int(self.levels.sum()) * (self.values.shape[0] // self.num_levels)


@dataclass
class Unpacked:
    """A payload read back: the image size, the dequantised features with zeros where nothing was sent."""

    height: int
    width: int
    features: Features
    asc: bool
    snr_db: float | None
    value_bits: int
    grey: bool = False  # the source was greyscale (R = G = B)


def pack(features: Features, height: int, width: int, value_bits: int = 8, asc: bool = True,
         snr_db: float | None = None) -> bytes:
    """Quantise the kept features to ``value_bits`` and write the payload."""
    c, h, w = features.values.shape
    L = features.num_levels
    if c % L or not 2 <= value_bits <= 16:
        raise ValueError(f"channels {c} must divide into {L} levels, and value bits must be 2..16")
    levels = np.asarray(features.levels, np.int64)
    if levels.shape != (h, w) or levels.min(initial=1) < 1 or levels.max(initial=1) > L:
        raise ValueError(f"levels must be ({h}, {w}) integers in 1..{L}")
    if not asc and (levels != L).any():
        raise ValueError("a payload without ASC keeps every feature: all levels must be L")
    value_bytes, scale, _ = quantise_and_pack(features.values, levels, c // L, value_bits)
    depth_map, coded = depth_map_section(levels, L) if asc else (b"", False)
    return assemble(height, width, (c, h, w), L, value_bits, scale, snr_db, depth_map, value_bytes,
                    depth_coded=coded)


def depth_map_section(levels: np.ndarray, num_levels: int) -> tuple[bytes, bool]:
    """A depth map (h, w) in 1..L as the payload carries it -> (its bytes, whether range-coded): the range-coded
    form (word count + stream, lamsc.semcom.depth_code) when it is shorter than the bit-packed one, else the
    bit-packed one (``level_bits(L)`` per position)."""
    levels = np.asarray(levels, np.int64)
    packed = pack_bits(levels.ravel() - 1, level_bits(num_levels))
    if num_levels > MAX_LEVELS:
        return packed, False
    words = encode_levels(levels, num_levels)
    coded = struct.pack(">I", len(words)) + words.astype(">u4").tobytes()
    return (coded, True) if len(coded) < len(packed) else (packed, False)


def quantise_and_pack(values: np.ndarray, levels: np.ndarray, per_level: int,
                      value_bits: int) -> tuple[bytes, float, int]:
    """The reference ASC pack of the kept values: (value bytes, quantiser scale, kept count).

    Symmetric uniform quantisation in float64 to ``value_bits`` bits, stored offset-binary, MSB first.
    """
    kept = _kept_values(values, np.asarray(levels, np.int64), per_level)
    qmax = (1 << (value_bits - 1)) - 1
    scale = float(np.abs(kept).max(initial=0.0)) or 1.0
    scale = float(np.float32(scale))  # the header stores float32: quantise with exactly what the receiver reads
    q = np.clip(np.rint(kept / scale * qmax), -qmax, qmax).astype(np.int64) + qmax + 1
    return pack_bits(q, value_bits), scale, kept.size


def assemble(height: int, width: int, shape: tuple[int, int, int], num_levels: int, value_bits: int, scale: float,
             snr_db: float | None, level_bytes: bytes, value_bytes: bytes, entropy_id: int | None = None,
             depth_coded: bool = False, grey: bool = False) -> bytes:
    """Header + depth map (empty without ASC) + values + CRC: the payload around already-packed parts.

    ``level_bytes``: the depth map as ``depth_map_section`` writes it; ``depth_coded`` says it is range-coded;
    ``grey``: the source image is greyscale (R = G = B), so the receiver need not show colour.

    ``entropy_id``: the fingerprint of the probability tables that coded ``value_bytes`` (an entropy-coded
    payload: ``value_bits`` 0, ``scale`` the quantiser step); None for fixed-width values."""
    c, h, w = shape
    if depth_coded and not level_bytes:
        raise ValueError("a range-coded depth map needs its bytes (ASC on)")
    flags = ((FLAG_ASC if level_bytes else 0) | (FLAG_SNR if snr_db is not None else 0)
             | (FLAG_DEPTH_CODED if depth_coded else 0) | (FLAG_GREY if grey else 0))
    if entropy_id is not None:
        flags |= FLAG_ENTROPY
        value_bytes = struct.pack(">I", entropy_id) + value_bytes
    snr_field = int(np.clip(round(snr_db), -128, 127)) if snr_db is not None else 0
    body = _HEADER.pack(MAGIC, VERSION, flags, height, width, c, num_levels, h, w, value_bits, scale, snr_field)
    body += level_bytes + value_bytes
    return body + struct.pack(">I", zlib.crc32(body))


@dataclass(frozen=True)
class Parsed:
    """A checked payload, its parts located but its values not yet decoded (the GPU unpack starts here)."""

    height: int
    width: int
    shape: tuple[int, int, int]  # features (C, h, w)
    num_levels: int
    value_bits: int
    scale: float
    snr_db: float | None
    levels: np.ndarray           # (h, w) in 1..L
    level_bytes: bytes           # bit-packed (level_bits(L) each; a coded map's decoded and re-packed):
                                 # empty without ASC
    value_bytes: bytes           # entropy-coded: the range-coded stream, after the fingerprint
    entropy_id: int | None = None  # the probability tables' fingerprint of an entropy-coded payload
    grey: bool = False           # the source was greyscale (R = G = B)

    @property
    def asc(self) -> bool:
        return bool(self.level_bytes)

    @property
    def step(self) -> np.float32:
        """Dequantisation step, float32 as every decoder (NumPy or CUDA) must use it."""
        return np.float32(self.scale / ((1 << (self.value_bits - 1)) - 1))


def parse(payload: bytes) -> Parsed:
    """Check a payload and locate its parts; a damaged, truncated or foreign one raises PayloadError."""
    if len(payload) < _HEADER.size + 4:
        raise PayloadError(f"payload of {len(payload)} bytes is shorter than a lamsc header; it was truncated")
    if payload[:3] != MAGIC:
        raise PayloadError("not a lamsc payload (bad magic); check what is sending to this receiver")
    body, (crc,) = payload[:-4], struct.unpack(">I", payload[-4:])
    if zlib.crc32(body) != crc:
        raise PayloadError("payload damaged in transit (CRC mismatch); it is counted as lost")
    (_, version, flags, height, width, c, L, h, w, value_bits, scale, snr_field) = _HEADER.unpack_from(body)
    if version != VERSION:
        raise PayloadError(f"payload version {version} is not supported (this lamsc reads {VERSION}); "
                           "use the same lamsc version at both ends")
    coded = bool(flags & FLAG_ENTROPY)
    depth_coded = bool(flags & FLAG_DEPTH_CODED)
    if (L == 0 or c % L or not (value_bits == 0 if coded else 2 <= value_bits <= 16) or flags > 31
            or depth_coded and not (flags & FLAG_ASC and L <= MAX_LEVELS)):
        raise PayloadError("payload header is inconsistent (channels, levels, value bits or flags)")
    offset, level_bytes = _HEADER.size, b""
    if depth_coded:
        levels, offset = _coded_depth_map(body, offset, (h, w), L)
        level_bytes = pack_bits(levels.ravel() - 1, level_bits(L))  # what the CUDA unpack reads
    elif flags & FLAG_ASC:
        lb = level_bits(L)
        level_bytes = body[offset:offset + math.ceil(h * w * lb / 8)]
        levels = unpack_bits(level_bytes, lb, h * w).reshape(h, w) + 1
        offset += len(level_bytes)
        if levels.max(initial=1) > L:
            raise PayloadError("payload depth map names a level beyond its header; it is not a valid payload")
    else:
        levels = np.full((h, w), L, np.int64)
    snr = float(snr_field) if flags & FLAG_SNR else None
    if coded:
        stream = body[offset + 4:]
        if len(body) - offset < 4 or len(stream) % 4 or not (math.isfinite(scale) and scale > 0):
            raise PayloadError("payload's entropy-coded values are not a fingerprint and whole 32-bit words, or "
                               "its quantiser step is not positive; it is not a valid payload")
        (entropy_id,) = struct.unpack_from(">I", body, offset)
        return Parsed(height, width, (c, h, w), L, 0, scale, snr, levels, level_bytes, stream, entropy_id,
                      grey=bool(flags & FLAG_GREY))
    count = int(levels.sum()) * (c // L)
    if len(body) - offset != math.ceil(count * value_bits / 8):
        raise PayloadError(f"payload holds {len(body) - offset} value bytes where its header implies "
                           f"{math.ceil(count * value_bits / 8)}; it is not a valid payload")
    return Parsed(height, width, (c, h, w), L, value_bits, scale, snr, levels, level_bytes, body[offset:],
                  grey=bool(flags & FLAG_GREY))


def _coded_depth_map(body: bytes, offset: int, shape: tuple[int, int], num_levels: int) -> tuple[np.ndarray, int]:
    """The range-coded depth map at ``offset`` of ``body`` -> (levels (h, w), offset past it); PayloadError when
    it does not fit in the payload or does not decode."""
    if len(body) < offset + 4:
        raise PayloadError("payload ends early; it was truncated")
    (n,) = struct.unpack_from(">I", body, offset)
    end = offset + 4 + 4 * n
    if end > len(body):
        raise PayloadError(f"payload's coded depth map claims {n} words, more than the payload holds; "
                           "it is not a valid payload")
    try:
        levels = decode_levels(np.frombuffer(body, ">u4", n, offset + 4), shape, num_levels)
    except (ValueError, RuntimeError) as e:  # constriction reports a stream it cannot decode as either
        raise PayloadError(f"payload's coded depth map does not decode ({e}); it is not a valid payload") from None
    return levels, end


def unpack(payload: bytes) -> Unpacked:
    """Read a fixed-width payload back; a damaged, truncated or foreign one raises PayloadError saying which
    (an entropy-coded one is read by lamsc.semcom.entropy's tables: ``Receiver.receive``)."""
    p = parse(payload)
    if p.entropy_id is not None:
        raise PayloadError("payload is entropy-coded (the digital mode): a Receiver holding the model's entropy "
                           "model reads it")
    return Unpacked(p.height, p.width, Features(decode_values(p), p.levels, p.num_levels), p.asc, p.snr_db,
                    p.value_bits, p.grey)


def decode_values(p: Parsed) -> np.ndarray:
    """The reference ASC unpack: dequantised values (C, h, w), zeros where nothing was sent."""
    c = p.shape[0]
    per_level = c // p.num_levels
    q = unpack_bits(p.value_bytes, p.value_bits, int(p.levels.sum()) * per_level)
    kept = (q - (1 << (p.value_bits - 1))).astype(np.float32) * p.step
    return _scatter_values(kept, p.levels, per_level, c)


def _kept_values(values: np.ndarray, levels: np.ndarray, per_level: int) -> np.ndarray:
    """Kept values in payload order: positions in raster order, each its first k channels."""
    c, h, w = values.shape
    flat = values.reshape(c, h * w).T  # (positions, channels)
    depth = levels.ravel() * per_level
    return flat[np.arange(c)[None, :] < depth[:, None]].astype(np.float64)


def _scatter_values(kept: np.ndarray, levels: np.ndarray, per_level: int, c: int) -> np.ndarray:
    h, w = levels.shape
    flat = np.zeros((h * w, c), np.float32)
    depth = levels.ravel() * per_level
    flat[np.arange(c)[None, :] < depth[:, None]] = kept
    return np.ascontiguousarray(flat.T.reshape(c, h, w))


def side_bits(shape: tuple[int, int, int], num_levels: int, asc: bool = True, depth_map: int | None = None) -> int:
    """Bits of a payload that are not feature values, for features of ``shape`` (C, h, w): header, depth map
    (with ASC) and CRC. An analog link sends these digitally (``lamsc.semcom.channels.channel_uses``).

    ``depth_map``: the depth map's bytes as sent (``depth_map_section``); None: the bit-packed size, which
    bounds every depth map the transmitter writes."""
    _, h, w = shape
    if depth_map is None:
        depth_map = math.ceil(h * w * level_bits(num_levels) / 8)
    return 8 * (_HEADER.size + (depth_map if asc else 0) + 4)


def level_bits(num_levels: int) -> int:
    """Bits per position in the depth map."""
    return max(1, math.ceil(math.log2(num_levels)))


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers (< 2**bits, bits <= 16) as a big-endian bit stream, zero-padded to a byte."""
    values = np.asarray(values).ravel()
    if bits == 8:
        return values.astype(np.uint8).tobytes()
    # each value as 16 big-endian bits, MSB first; its low ``bits`` of them are its field
    wide = np.unpackbits(values.astype(">u2").view(np.uint8).reshape(-1, 2), axis=1)
    return np.packbits(wide[:, 16 - bits:]).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: ``count`` unsigned integers of ``bits`` bits each (int64)."""
    if len(data) * 8 < count * bits:
        raise PayloadError("payload ends early; it was truncated")
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw[:count].astype(np.int64)
    wide = np.zeros((count, 16), np.uint8)
    wide[:, 16 - bits:] = np.unpackbits(raw, count=count * bits).reshape(count, bits)
    return np.packbits(wide, axis=1).view(">u2").ravel().astype(np.int64)
