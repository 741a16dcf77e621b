"""The image codecs a separation link sends (JPEG, WebP, JPEG 2000, AVIF through Pillow), and the search for
the best file that fits a number of bytes.

A file that does not fit at full size is made from the image downscaled (Lanczos), and the receiver scales
what it decodes back up (bicubic) to the original size: at few channel uses a small sharp picture beats
nothing. Among the codecs, scales (steps of 2^-1/2 down from the largest a format can hold) and quality
settings, the search keeps the file whose decoded, upscaled picture has the highest PSNR against the
original: the operating point a transmitter that knows its image would pick.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, features

from lamsc.semcom import metrics

CODECS = ("jpeg", "webp", "jpeg2000", "avif")
# The longest side each format encodes: libjpeg 65500, libwebp 16383, JPEG 2000's 32-bit SIZ fields
# (ISO/IEC 15444-1), AV1's 16-bit frame size fields (AV1 spec 5.9.5) as libavif encodes them.
MAX_SIDE = {"jpeg": 65500, "webp": 16383, "jpeg2000": 2**31, "avif": 65536}
MIN_SIDE = 8       # the smallest longer side tried (pixels)
SCALE_STEP = 2 ** -0.5
_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "jpeg2000": "JPEG2000", "avif": "AVIF"}
# quality settings tried, lowest first: every one (steps of 5 leave up to a tenth of a budget unused)
_QUALITIES = {"jpeg": tuple(range(1, 96)), "webp": tuple(range(0, 101)), "avif": tuple(range(0, 101))}


def supported(codec: str) -> bool:
    """Whether this Pillow encodes ``codec`` (wheels from 11.3 carry all four; a distribution's build may not)."""
    return features.check({"jpeg": "jpg", "webp": "webp", "jpeg2000": "jpg_2000", "avif": "avif"}[codec])


@dataclass(frozen=True)
class Encoded:
    """One file: ``codec``, its ``data``, the size it was made at (``width``, ``height``, pixels) and
    ``setting`` (quality for JPEG/WebP/AVIF; the compression ratio for JPEG 2000); ``psnr`` (dB) of its
    decoded picture scaled back to the original's size."""

    codec: str
    data: bytes
    width: int
    height: int
    setting: float
    psnr: float

    def describe(self, full: tuple[int, int]) -> str:
        h, w = full
        size = "full size" if (self.width, self.height) == (w, h) else f"{self.width}x{self.height} of {w}x{h}"
        setting = f"ratio {self.setting:.0f}" if self.codec == "jpeg2000" else f"q{self.setting:.0f}"
        return f"{self.codec} {setting} {size}, {len(self.data)} bytes"


def encode(image: np.ndarray, codec: str, setting: float) -> bytes:
    """(H, W, 3) uint8 -> the file's bytes. JPEG: optimised Huffman tables, 4:2:0; WebP: libwebp method 6
    (its slowest, smallest files); AVIF: libavif speed 6 (its default; speed 8 makes files 7-10% larger at a
    lower PSNR); JPEG 2000: the irreversible 9/7 wavelet at compression ratio ``setting``."""
    pil, buf = Image.fromarray(image), io.BytesIO()
    if codec == "jpeg":
        pil.save(buf, "JPEG", quality=int(setting), optimize=True)
    elif codec == "webp":
        pil.save(buf, "WEBP", quality=int(setting), method=6)
    elif codec == "avif":
        pil.save(buf, "AVIF", quality=int(setting), speed=6)
    elif codec == "jpeg2000":
        pil.save(buf, "JPEG2000", quality_mode="rates", quality_layers=[float(setting)], irreversible=True)
    else:
        raise ValueError(f"unknown codec {codec!r}; one of {', '.join(CODECS)}")
    return buf.getvalue()


def decode(data: bytes, codec: str, height: int, width: int) -> np.ndarray | None:
    """A file (complete or cut short) -> what its decoder shows, scaled to (height, width, 3) uint8; None
    when the decoder makes nothing of it. A truncated file decodes as far as it goes where the format allows
    (Pillow's LOAD_TRUNCATED_IMAGES: JPEG fills the missing rows)."""
    if not data:
        return None
    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(io.BytesIO(data), formats=[_FORMAT[codec]]) as pil:
            pil = pil.convert("RGB")
            pil.load()
    except (OSError, ValueError, SyntaxError, EOFError):  # what Pillow raises on a damaged file
        return None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
    if pil.size != (width, height):
        pil = pil.resize((width, height), Image.BICUBIC)
    return np.asarray(pil)


class CodecSearch:
    """The best file of one image (H, W, 3) uint8 within a byte budget; encodes are cached, so that many
    budgets (several SNRs, the practical and the ideal link) cost little more than one."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.height, self.width = image.shape[:2]
        self._files: dict[tuple, bytes] = {}
        self._psnr: dict[tuple, float] = {}
        self._scaled: dict[tuple[int, int], np.ndarray] = {}

    def sizes(self, codec: str) -> list[tuple[int, int]]:
        """(width, height) to try, largest first: full size, or the largest the format holds, then steps of
        2^-1/2 (no side under one pixel) until the longer side is MIN_SIDE or less."""
        h, w = self.height, self.width
        s = min(1.0, MAX_SIDE[codec] / max(h, w))
        out: list[tuple[int, int]] = []
        while True:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            if size not in out:
                out.append(size)
            if max(size) <= MIN_SIDE:
                return out
            s *= SCALE_STEP

    def file(self, codec: str, size: tuple[int, int], setting: float) -> bytes:
        key = (codec, size, setting)
        if key not in self._files:
            self._files[key] = encode(self._at(size), codec, setting)
        return self._files[key]

    def psnr(self, codec: str, size: tuple[int, int], setting: float) -> float:
        key = (codec, size, setting)
        if key not in self._psnr:
            shown = decode(self.file(codec, size, setting), codec, self.height, self.width)
            self._psnr[key] = float(metrics.psnr(self.image, shown)) if shown is not None else -math.inf
        return self._psnr[key]

    def best(self, max_bytes: int, codecs: tuple[str, ...] = CODECS) -> Encoded | None:
        """The file of the highest PSNR among ``codecs`` (those this Pillow encodes) whose length is at most
        ``max_bytes``; None when none fits even at the smallest size and lowest setting."""
        found = [e for c in codecs if supported(c) and (e := self.best_of(c, max_bytes)) is not None]
        return max(found, key=lambda e: e.psnr, default=None)

    def best_of(self, codec: str, max_bytes: int) -> Encoded | None:
        """The best file of one codec: the largest size whose lowest setting fits (file length grows with
        size, so bisect), then at that size and the smaller ones the highest setting that fits, until the
        PSNR stops improving."""
        sizes = self.sizes(codec)
        lo, hi, first = 0, len(sizes) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            if self._fits(codec, sizes[mid], self._lowest(codec, sizes[mid], max_bytes), max_bytes):
                first, hi = mid, mid - 1
            else:
                lo = mid + 1
        if first is None:
            return None
        best = None
        for size in sizes[first:]:
            setting = self._fit(codec, size, max_bytes)
            if setting is None:
                break
            e = Encoded(codec, self.file(codec, size, setting), *size, setting, self.psnr(codec, size, setting))
            if best is not None and e.psnr <= best.psnr:
                break
            best = e
        return best

    def _lowest(self, codec: str, size: tuple[int, int], max_bytes: int) -> float | None:
        if codec == "jpeg2000":
            return self._fit_ratio(size, max_bytes)
        return _QUALITIES[codec][0]

    def _fits(self, codec: str, size: tuple[int, int], setting: float | None, max_bytes: int) -> bool:
        return setting is not None and len(self.file(codec, size, setting)) <= max_bytes

    def _fit(self, codec: str, size: tuple[int, int], max_bytes: int) -> float | None:
        """The highest-quality setting whose file at ``size`` fits ``max_bytes``, or None."""
        if codec == "jpeg2000":
            return self._fit_ratio(size, max_bytes)
        grid = _QUALITIES[codec]
        lo, hi, best = 0, len(grid) - 1, None
        while lo <= hi:  # file size grows with quality: bisect
            mid = (lo + hi) // 2
            if len(self.file(codec, size, grid[mid])) <= max_bytes:
                best, lo = grid[mid], mid + 1
            else:
                hi = mid - 1
        return best

    def _fit_ratio(self, size: tuple[int, int], max_bytes: int) -> float | None:
        """JPEG 2000 is rate-controlled: ask for the ratio that fits, then raise it by the overshoot (at
        least 3%) while OpenJPEG's file, headers included, still exceeds the budget."""
        raw = size[0] * size[1] * 3
        if max_bytes <= 0:
            return None
        ratio = max(1.0, raw / max_bytes)
        for _ in range(8):
            ratio = float(f"{ratio:.4g}")  # a short key, so budgets close together share encodes
            n = len(self.file("jpeg2000", size, ratio))
            if n <= max_bytes:
                return ratio
            ratio *= max(1.03, n / max_bytes)
            if ratio > raw:  # under one byte of image data: the headers alone do not fit
                return None
        return None

    def _at(self, size: tuple[int, int]) -> np.ndarray:
        if size == (self.width, self.height):
            return self.image
        if size not in self._scaled:
            self._scaled[size] = np.asarray(Image.fromarray(self.image).resize(size, Image.LANCZOS))
        return self._scaled[size]
