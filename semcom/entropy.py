"""Entropy coding of quantised features under a learned density with spatial contexts, and its file beside the model.

The density is the factorised prior of Ballé, Minnen, Singh, Hwang and Johnston, "Variational image
compression with a scale hyperprior" (ICLR 2018, appendix 6.1): per feature channel c a monotone
cumulative F_c(x) = sigmoid(f_c(x)), f_c a chain of small dense layers whose matrices are kept positive
(softplus) and whose nonlinearities a + tanh(b) tanh(a) with |tanh(b)| < 1 are increasing.

Here it models the transmitter's features ``z`` at unit average power (the kept values, before any
quantiser), so that one density serves every quantiser step Δ of ``STEPS``: the integer q = round(z / Δ)
has probability F_c(Δ(q + 1/2)) - F_c(Δ(q - 1/2)). It is fitted by the uniform-noise relaxation of the
same paper, at steps drawn log-uniformly over ``STEPS``: minimise E[-log2(F(z + Δu + Δ/2) - F(z + Δu - Δ/2))],
u ~ U(-1/2, 1/2), which is the rate of round(z / Δ) in expectation over the dither.

Contexts: a feature map is spatially smooth, so each value is coded under the distribution of its channel
given its causal neighbours in the same channel (left, up, up-left, up-right, in raster order; weights 3, 3,
1, 1 over those that were sent): their weighted mean, (Δ · weighted sum) / total weight in float64 from
integers and the table's float32-exact step (so both ends compute it bit for bit), falls into one of the
bins between ``CONTEXT_EDGES`` mirrored about 0, and bin 0 is "no neighbour sent". Each (step, channel,
bin) has its own probability table: the counts of the symbols seen in that context when fitting, plus
``CONTEXT_PRIOR`` pseudo-counts spread as the factorised density says (the posterior mean under a Dirichlet
prior, which falls back to the density where a context was rarely seen).
The predicted mean is what pays: on the shipped model's features of the bundled photographs (held out from
the fit; steps 1/4 to 2 at the shipped kept fractions), a table per (step, channel) codes 1-11% below the
density, tables binned by the neighbours' magnitude 6-17%, by their signed mean 10-32% (the coarser the step,
the more).

Coding: per step, channel and bin a probability table over the channel's integers [low, low + n)
(``ProbabilityTables``, float32), computed when the density is fitted and stored with it, so that both ends code
with the same numbers; the range coder is constriction's (``constriction.stream.queue``, model family
``Categorical``). Order: by wavefront t = 2i + j (every causal neighbour of (i, j) lies on an earlier one, so a
receiver decodes a wavefront in one call), then channel, then row. Clip rule: a value beyond the support is sent
as the nearest end of it (the support is the fitting data's largest magnitude plus a quarter, so this is rare
and bounded).
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from lamsc.errors import UserError
from lamsc.semcom.asc_levels import levels_to_mask
from lamsc.semcom.config import DEFAULT_MODEL
from lamsc.semcom.files import honour_umask

FORMAT, FORMAT_VERSION = "lamsc-density", 2
# quantiser steps relative to unit feature power, 2^(k/4) from 1/16 to 2 (float32-exact, as the header holds them)
STEPS = tuple(float(np.float32(2.0 ** (k / 4))) for k in range(-16, 5))
SUFFIX = ".density.safetensors"

# context bins of the neighbours' predicted value (unit feature power), mirrored about 0: log-spaced from the
# finest step's scale to the features' tails; 12 to 24 edges coded the same within 1% (module docstring's data)
CONTEXT_EDGES = (0.05, 0.09, 0.16, 0.28, 0.5, 0.9, 1.6, 2.9)
_EDGES = np.array([-e for e in reversed(CONTEXT_EDGES)] + list(CONTEXT_EDGES))
CONTEXTS = len(_EDGES) + 2  # bin 0: no causal neighbour sent; 1 .. len + 1: between the edges
# causal neighbours (row offset, column offset, weight): left, up, up-left, up-right
NEIGHBOURS = ((0, -1, 3), (-1, 0, 3), (-1, -1, 1), (-1, 1, 1))
# pseudo-counts of the factorised density in each context's table; 5 to 80 coded the same within 0.2%
CONTEXT_PRIOR = 20.0
_CHUNK = 4096  # symbols per encoder call: bounds the encoder's (symbols, support) probability array


@dataclass
class ProbabilityTables:
    """For each step s of ``steps`` and channel c: probabilities ``pmf[s][c, b, :size[s, c]]`` (float32, each
    sums to 1 up to float32) of the integers low[s, c] .. low[s, c] + size[s, c] - 1 in context bin b, zeros past
    ``size`` (``pmf[s]`` is (C, CONTEXTS, max_c size[s, c])). ``fingerprint``: CRC-32 of the tables, written into
    each payload so a receiver holding other tables says so instead of decoding nonsense."""

    steps: tuple[float, ...]
    low: np.ndarray             # (S, C) int64
    size: np.ndarray            # (S, C) int64
    pmf: list[np.ndarray]       # S arrays (C, CONTEXTS, n_s) float32

    @property
    def fingerprint(self) -> int:
        """CRC-32 of the steps, supports and tables as the file holds them, and of the context rule
        (``CONTEXT_EDGES``, ``NEIGHBOURS``): an install binning otherwise refuses these payloads."""
        crc = zlib.crc32(np.asarray(self.steps, np.float32).tobytes())
        crc = zlib.crc32(np.asarray(CONTEXT_EDGES, "<f8").tobytes(), crc)
        crc = zlib.crc32(np.asarray(NEIGHBOURS, "<i8").tobytes(), crc)
        crc = zlib.crc32(self.low.astype("<i8").tobytes(), crc)
        crc = zlib.crc32(self.size.astype("<i8").tobytes(), crc)
        for s in range(len(self.steps)):
            crc = zlib.crc32(self.trimmed(s).astype("<f4").tobytes(), crc)
        return crc

    def trimmed(self, s: int) -> np.ndarray:
        """Step ``s``'s tables without the padding: each channel's (CONTEXTS, size) rows, flattened, float32."""
        return np.concatenate([self.pmf[s][c, :, :n].ravel() for c, n in enumerate(self.size[s])]).astype(np.float32)

    def index(self, step: float) -> int:
        """The table index of quantiser ``step`` (float32-exact); ValueError for a step without tables."""
        for i, s in enumerate(self.steps):
            if np.float32(s) == np.float32(step):
                return i
        raise ValueError(f"quantiser step {step:g} has no probability table; "
                         f"steps: {', '.join(f'{s:g}' for s in self.steps)}")

    def support(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        """The smallest and largest integer coded at ``step`` in each channel: two (C,) int64 arrays."""
        s = self.index(step)
        return self.low[s], self.low[s] + self.size[s] - 1


@dataclass
class EntropyModel:
    """A fitted density and its tables: what both ends of a digital link hold (``load_entropy_model``).
    ``weights``: the density's parameters by name, float32 (lamsc.semcom.entropy_fit.FactorizedDensity's
    state), kept so the file says what made its tables; coding needs only the tables."""

    weights: dict[str, np.ndarray]
    tables: ProbabilityTables
    largest: np.ndarray         # (C,) largest magnitude per channel in the fitting data
    provenance: dict
    # per step of the tables, the fraction of feature values the digital mode sends (entropy_fit.fit_kept_fractions);
    # None: ASC's own choice
    kept: tuple[float, ...] | None = None

    @property
    def channels(self) -> int:
        return int(self.tables.pmf[0].shape[0])

    def kept_at(self, step: float) -> float | None:
        """The fitted fraction of feature values sent at quantiser ``step``; None where no rule was fitted."""
        return None if self.kept is None else self.kept[self.tables.index(step)]

    def quantise(self, values: np.ndarray, step: float) -> np.ndarray:
        """Real values (C, ...) (unit-power domain) -> integers round(v / step) int64, each channel's clipped to
        its support."""
        values = np.asarray(values, np.float64)
        low, high = (b.reshape(-1, *[1] * (values.ndim - 1)) for b in self.tables.support(step))
        return np.clip(np.rint(values / self.tables.steps[self.tables.index(step)]), low, high).astype(np.int64)

    def encode(self, symbols: np.ndarray, kept: np.ndarray, step: float) -> bytes:
        """Integers (C, h, w) within the support, where ``kept`` (C, h, w) bool is set -> one range-coded stream
        in the module's order (wavefront, channel, row), as big-endian 32-bit words."""
        import constriction

        s = self.tables.index(step)
        c, bins, index = self._coded(symbols, kept, s)
        encoder, family = constriction.stream.queue.RangeEncoder(), _family()
        for at in range(0, len(index), _CHUNK):
            part = slice(at, at + _CHUNK)
            encoder.encode(index[part].astype(np.int32), family,
                           self.tables.pmf[s][c[part], bins[part]].astype(np.float64))
        return encoder.get_compressed().astype(">u4").tobytes()

    def decode(self, data: bytes, kept: np.ndarray, step: float) -> np.ndarray:
        """Inverse of ``encode``: the integers (C, h, w) int64 where ``kept`` is set, 0 elsewhere. Raises
        ValueError on a stream that is not whole 32-bit words or that the coder finds invalid; other damage
        decodes to some integers (the payload's CRC is what detects damage)."""
        import constriction

        if len(data) % 4:
            raise ValueError("a range-coded stream is whole 32-bit words")
        s = self.tables.index(step)
        step = self.tables.steps[s]
        q, k = _padded(np.zeros(kept.shape, np.int64), kept)
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, ">u4").astype(np.uint32))
        family, pmf, low = _family(), self.tables.pmf[s], self.tables.low[s]
        order = coding_order(kept)
        fronts = np.flatnonzero(np.diff(2 * order[1] + order[2])) + 1  # where each wavefront starts
        for c, i, j in zip(*(np.split(a, fronts) for a in order)):
            if not len(c):  # nothing kept at all
                continue
            bins = _contexts(q, k, c, i, j, step)  # from earlier wavefronts only: decoded already
            try:
                symbols = decoder.decode(family, pmf[c, bins].astype(np.float64))
            except AssertionError as e:  # constriction's word for a stream no model could have written
                raise ValueError(f"the range-coded stream is invalid for these tables ({e})") from None
            q[c, i + 1, j + 1] = symbols.astype(np.int64) + low[c]
        return q[:, 1:, 1:-1]

    def rate_bits(self, symbols: np.ndarray, kept: np.ndarray, step: float) -> float:
        """The model's rate of integers (C, h, w) where ``kept`` is set, at ``step``: sum of -log2 P(q | context),
        bits (no coder overhead)."""
        s = self.tables.index(step)
        c, bins, index = self._coded(symbols, kept, s)
        return float(-np.log2(self.tables.pmf[s][c, bins, index].astype(np.float64)).sum())

    def _coded(self, symbols: np.ndarray, kept: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The channel, context bin and table index of each kept symbol at step index ``s``, in coding order;
        ValueError for a symbol outside its channel's support."""
        c, i, j = coding_order(kept)
        # the float32-exact step the header carries: the receiver bins with it
        bins = _contexts(*_padded(symbols, kept), c, i, j, self.tables.steps[s])
        index = symbols[c, i, j] - self.tables.low[s, c]
        if ((index < 0) | (index >= self.tables.size[s, c])).any():
            raise ValueError("a symbol lies outside its channel's support: quantise the values with quantise()")
        return c, bins, index

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | Path, model_file: str | Path | None = None) -> Path:
        """Write the density file (safetensors): weights, tables and, in its metadata, the steps, provenance
        and ``transmitter_sha256`` of ``model_file`` (the .safetensors of the model it was fitted for)."""
        path = Path(path)
        t = self.tables
        tensors = {f"density.{k}": np.ascontiguousarray(v) for k, v in self.weights.items()}
        tensors["low"] = np.ascontiguousarray(t.low, np.int64)
        tensors["largest"] = np.asarray(self.largest, np.float64)
        tensors["size"] = np.ascontiguousarray(t.size, np.int64)
        # each channel's support only: the padding past it is zeros
        tensors |= {f"pmf.{s}": t.trimmed(s) for s in range(len(t.steps))}
        meta = {"format": FORMAT, "version": str(FORMAT_VERSION), "channels": str(self.channels),
                "steps": json.dumps(list(t.steps)), "provenance": json.dumps(self.provenance),
                "transmitter_sha256": transmitter_sha256(model_file) if model_file else "",
                "kept": json.dumps(list(self.kept)) if self.kept is not None else ""}
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=meta)
        honour_umask(path)
        return path

    @classmethod
    def load(cls, path: str | Path, model_file: str | Path | None = None) -> "EntropyModel":
        """Read a density file; UserError when it is missing, not a lamsc density, or fitted for a model
        other than ``model_file`` (when given: its transmitter's weights by ``transmitter_sha256``; a file
        written before that field, by the SHA-256 of the whole model file)."""
        from safetensors import safe_open

        path = Path(path)
        fit = f"fit one with `lamsc density fit --model {_model_base(path)}`"
        if not path.is_file():
            raise UserError(f"no entropy model at {path} (the digital mode needs one beside the model); {fit}")
        try:
            with safe_open(str(path), "np") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for damaged headers
            raise UserError(f"{path} is not a readable safetensors file ({e}); {fit}") from None
        if meta.get("format") != FORMAT or meta.get("version") != str(FORMAT_VERSION):
            raise UserError(f"{path} is not a version-{FORMAT_VERSION} lamsc density; {fit}")
        if model_file is not None and (
                (meta.get("transmitter_sha256") and meta["transmitter_sha256"] != transmitter_sha256(model_file))
                or (meta.get("model_sha256") and meta["model_sha256"] != file_sha256(model_file))):
            raise UserError(f"{path} was fitted for another model than {model_file}; {fit}")
        try:
            channels, steps = int(meta["channels"]), tuple(json.loads(meta["steps"]))
            provenance, largest = json.loads(meta["provenance"]), tensors["largest"]
        except (KeyError, ValueError) as e:  # ValueError: int() or JSON of a damaged field
            raise UserError(f"{path} lacks or garbles a lamsc density's {e} field; {fit}") from None
        weights = {k[len("density."):]: v for k, v in tensors.items() if k.startswith("density.")}
        low, size = tensors.get("low"), tensors.get("size")
        flat = [tensors.get(f"pmf.{s}") for s in range(len(steps))]
        if (low is None or size is None or low.shape != (len(steps), channels) or size.shape != low.shape
                or (size < 1).any() or any(f is None or f.ndim != 1 or f.dtype != np.float32
                                           or f.size != CONTEXTS * n.sum() for f, n in zip(flat, size))):
            raise UserError(f"{path} holds tables of other shapes than {len(steps)} steps x {channels} channels x "
                            f"{CONTEXTS} contexts; {fit}")
        pmf = []
        for f, n in zip(flat, size):
            table = np.zeros((channels, CONTEXTS, int(n.max())), np.float32)
            for c, part in enumerate(np.split(f, CONTEXTS * np.cumsum(n)[:-1])):
                table[c, :, :n[c]] = part.reshape(CONTEXTS, n[c])
            pmf.append(table)
        tables = ProbabilityTables(steps, low.astype(np.int64), size.astype(np.int64), pmf)
        kept = tuple(json.loads(meta["kept"])) if meta.get("kept") else None
        if kept is not None and (len(kept) != len(steps) or not all(0 < k <= 1 for k in kept)):
            raise UserError(f"{path} holds kept fractions {list(kept)} for {len(steps)} quantiser steps, where one "
                            f"in (0, 1] per step belongs; {fit}")
        return cls(weights, tables, largest, provenance, kept)


def density_path(model_path: str | Path) -> Path:
    """Where a model's density lives: NAME.density.safetensors beside NAME.safetensors and NAME.json."""
    base = model_base(model_path)
    return base.with_name(base.name + SUFFIX)


def model_base(model_path: str | Path) -> Path:
    """NAME from NAME, NAME.safetensors or NAME.json; FOLDER/model from a folder holding model.safetensors
    (what `lamsc train` writes), as lamsc.semcom.model.load_model reads them."""
    path = Path(model_path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model"
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def load_entropy_model(model_path: str | Path | None = None) -> EntropyModel:
    """The density saved beside the model at ``model_path`` (NAME, NAME.safetensors or NAME.json; None: the
    shipped model); UserError naming the command that fits one when it is missing or belongs to another model."""
    base = model_base(DEFAULT_MODEL if model_path is None else model_path)
    return EntropyModel.load(density_path(base), base.with_name(base.name + ".safetensors"))


def entropy_beside(model_path: str | Path) -> EntropyModel | None:
    """The density saved beside the model at ``model_path``, or None where none was fitted; UserError for one
    that belongs to another model."""
    return load_entropy_model(model_path) if density_path(model_path).is_file() else None


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


TRANSMITTER_PARTS = ("asi.", "encoder.", "mask_net.")  # what makes and chooses the features a density codes


def transmitter_sha256(model_file: str | Path) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of the weights of a model file (.safetensors) that
    make and choose the sent features (``TRANSMITTER_PARTS``): a density fitted for a model fits every model
    that shares them, such as one whose decoder alone was fine-tuned (``TrainConfig.parts``)."""
    digest = hashlib.sha256()
    for name, value in sorted(load_file(str(model_file)).items()):
        if name.startswith(TRANSMITTER_PARTS):
            digest.update(f"{name}|{value.dtype}|{value.shape}|".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()


def _model_base(path: Path) -> str:
    name = path.name
    return str(path.with_name(name[: -len(SUFFIX)])) if name.endswith(SUFFIX) else str(path)


def effective_snr(step: float, snr_range: tuple[float, float]) -> float:
    """The SNR (dB) of uniform quantisation noise at ``step`` on unit-power features, 10 log10(12 / Δ²)
    (noise variance Δ²/12), clipped to the model's trained ``snr_range``: what the decoder is told."""
    return float(np.clip(10.0 * math.log10(12.0 / step**2), *snr_range))


def nearest_step(step: float) -> float:
    """The step of ``STEPS`` nearest to ``step`` on a log scale; UserError for a step that is not positive."""
    if not step > 0:
        raise UserError(f"quantiser step {step:g}: give a positive step (relative to unit feature power), "
                        f"e.g. {STEPS[len(STEPS) // 2]:g}")
    return min(STEPS, key=lambda s: abs(math.log(s / step)))


DEFAULT_STEP = 0.5  # the digital mode's default quantiser step: effective SNR 16.8 dB


@dataclass(frozen=True)
class DigitalMode:
    """The digital mode of a Transmitter: kept features at unit power quantised with step ``step`` (one of
    ``entropy``'s steps, relative to unit feature power: the rate knob) and range-coded under ``entropy``.

    ``kept``: the fraction of feature values sent, in (0, 1], ASC's depth map (its block mean,
    ``lamsc.semcom.asc_levels.block_mean``) shifted to send at most it, as under a channel budget, and at
    least one ASC level (C / L channels) per position; None: the fraction ``entropy`` was fitted with for the
    step (``kept_at``), or where it has none, ASC's own choice, its block mean. Which fraction pays depends on
    the step: a coarse step spends its bits best on few features, a fine one on more
    (``entropy_fit.fit_kept_fractions``).

    The receiver dequantises (q * Δ) and tells the decoder the SNR of the quantisation noise,
    ``effective_snr(step, snr_range)`` = 10 log10(12 / Δ²) clipped to the model's range: the decoder is
    trained for AWGN on unit-power features, and rounding adds noise of variance Δ²/12 (uniform, for steps
    small beside the features' spread). The transmitter's encoder is conditioned on the same SNR.
    Raises UserError for a step without tables, or a fraction outside (0, 1].
    """

    entropy: EntropyModel
    step: float = DEFAULT_STEP
    kept: float | None = None

    def __post_init__(self) -> None:
        try:
            self.entropy.tables.index(self.step)
        except ValueError as e:
            raise UserError(f"{e}: choose one of them (lamsc.semcom.entropy.nearest_step finds the closest)") from None
        if self.kept is not None and not 0 < self.kept <= 1:
            raise UserError(f"a kept fraction of {self.kept:g}: give one in (0, 1] (1: every feature value)")

    @property
    def kept_fraction(self) -> float | None:
        """The fraction of feature values sent: ``kept``, else the entropy model's for the step, else None
        (ASC's own choice)."""
        return self.kept if self.kept is not None else self.entropy.kept_at(self.step)


def kept_by_channel(levels: np.ndarray, channels: int, num_levels: int) -> np.ndarray:
    """Which positions (h, w) keep each channel: (C, h, w) bool, channel c where c < level * C / L."""
    return levels_to_mask(np.asarray(levels), channels, num_levels) > 0


def encode_features(entropy: EntropyModel, values: np.ndarray, levels: np.ndarray, num_levels: int,
                    step: float) -> tuple[bytes, int]:
    """Kept features (C, h, w) at unit power, kept to ``levels`` (h, w) in 1..L -> (range-coded stream, number
    of values coded), quantised at ``step``."""
    kept = kept_by_channel(levels, values.shape[0], num_levels)
    return entropy.encode(entropy.quantise(values, step), kept, step), int(kept.sum())


def decode_features(entropy: EntropyModel, stream: bytes, levels: np.ndarray, num_levels: int, channels: int,
                    step: float) -> np.ndarray:
    """Inverse of ``encode_features`` up to the quantiser: dequantised values (C, h, w) float32, q * step,
    zeros where nothing was sent."""
    kept = kept_by_channel(levels, channels, num_levels)
    return (entropy.decode(stream, kept, step) * np.float64(step)).astype(np.float32)


def contexts(symbols: np.ndarray, kept: np.ndarray, step: float) -> np.ndarray:
    """The context bin (module docstring) of every position of integers ``symbols`` (C, h, w) sent where ``kept``
    (C, h, w) bool is set: (C, h, w) int64 in 0 .. CONTEXTS - 1."""
    c, i, j = np.indices(kept.shape).reshape(3, -1)
    return _contexts(*_padded(symbols, kept), c, i, j, step).reshape(kept.shape)


def coding_order(kept: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positions (c, i, j) where ``kept`` (C, h, w) is set, in the order they are coded: by wavefront
    t = 2i + j (every causal neighbour of (i, j) lies on an earlier one), then channel, then row."""
    c, i, j = np.nonzero(kept)
    order = np.lexsort((i, c, 2 * i + j))
    return c[order], i[order], j[order]


def _padded(symbols: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symbols and kept flags (C, h, w) as int64 with a border of zeros (one row above, a column each side), so
    that position (i, j)'s neighbours are at (i + 1 + di, j + 1 + dj) with no bounds checks."""
    channels, h, w = kept.shape
    q, k = np.zeros((2, channels, h + 1, w + 2), np.int64)
    q[:, 1:, 1:-1] = np.where(kept, symbols, 0)
    k[:, 1:, 1:-1] = kept
    return q, k


def _contexts(q: np.ndarray, k: np.ndarray, c: np.ndarray, i: np.ndarray, j: np.ndarray, step: float) -> np.ndarray:
    """Context bins of positions (c, i, j) (1-D index arrays) from padded symbols and kept flags (``_padded``)."""
    total, weight = np.zeros((2, len(c)), np.int64)
    for di, dj, wt in NEIGHBOURS:
        total += wt * q[c, i + 1 + di, j + 1 + dj]
        weight += wt * k[c, i + 1 + di, j + 1 + dj]
    # integers, then one multiply and one divide in float64: the same bits at both ends
    predicted = np.float64(step) * total / np.maximum(weight, 1)
    return np.where(weight > 0, 1 + np.searchsorted(_EDGES, predicted), 0)


def _family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)
