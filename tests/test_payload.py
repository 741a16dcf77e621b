"""Payload: exact round trips, every single-bit flip detected, foreign bytes rejected."""

import os

import numpy as np
import pytest

from lamsc.semcom.config import ModelConfig
from lamsc.semcom.depth_code import decode_levels, encode_levels
from lamsc.semcom.payload import (FLAG_DEPTH_CODED, Features, PayloadError, depth_map_section, pack, pack_bits, parse,
                                  unpack, unpack_bits)
from lamsc.semcom.transmission import Receiver


def features(seed=0, c=16, h=5, w=7, L=8, full=False):
    rng = np.random.default_rng(seed)
    levels = np.full((h, w), L) if full else rng.integers(1, L + 1, (h, w))
    return Features(rng.normal(0, 1, (c, h, w)).astype(np.float32), levels, L)


@pytest.mark.parametrize("bits", [2, 3, 5, 8, 11, 16])
def test_bit_packing_round_trips(bits):
    rng = np.random.default_rng(bits)
    v = rng.integers(0, 1 << bits, 1001)
    assert np.array_equal(unpack_bits(pack_bits(v, bits), bits, v.size), v)


@pytest.mark.parametrize("asc", [True, False])
@pytest.mark.parametrize("bits", [4, 8, 12])
def test_round_trip_against_float64_quantiser(asc, bits):
    f = features(full=not asc)
    out = unpack(pack(f, 37, 53, bits, asc=asc, snr_db=7.0))
    assert (out.height, out.width, out.asc, out.snr_db, out.value_bits) == (37, 53, asc, 7.0, bits)
    assert np.array_equal(out.features.levels, f.levels)
    mask = f.kept_mask
    # Independent float64 reference of the symmetric uniform quantiser
    kept = f.values.astype(np.float64)[mask]
    qmax = 2 ** (bits - 1) - 1
    scale = np.float32(np.abs(kept).max())
    ref = np.clip(np.rint(kept / scale * qmax), -qmax, qmax) * (np.float64(scale) / qmax)
    assert np.all(out.features.values[~mask] == 0)  # what was not sent comes back as exact zeros
    assert np.allclose(out.features.values[mask], ref, rtol=0, atol=1e-6 * float(scale))
    assert np.abs(out.features.values[mask] - kept).max() <= float(scale) / qmax / 2 * 1.0001


def test_repacking_is_bit_exact():
    payload = pack(features(3), 40, 56)
    again = unpack(payload)
    assert pack(again.features, 40, 56, again.value_bits, snr_db=again.snr_db) == payload


def test_payload_length_counts_only_kept_values():
    f = features(4)
    payload = pack(f, 40, 56, 8)
    header_and_crc = 21 + 4
    depth_map = int(np.ceil(f.levels.size * 3 / 8))
    assert len(payload) == header_and_crc + depth_map + f.kept_count


def test_every_single_bit_flip_is_detected():
    payload = pack(features(5, c=8, h=3, w=4, L=4), 24, 32, 6)
    for i in range(len(payload) * 8):
        damaged = bytearray(payload)
        damaged[i // 8] ^= 0x80 >> (i % 8)
        with pytest.raises(PayloadError):
            unpack(bytes(damaged))


@pytest.mark.parametrize("n", [0, 10, 30, 200, 5000])
def test_random_bytes_are_rejected(n):
    with pytest.raises(PayloadError):
        unpack(os.urandom(n))


def test_truncated_payload_is_rejected():
    payload = pack(features(6), 40, 56)
    for cut in (1, 5, len(payload) // 2):
        with pytest.raises(PayloadError):
            unpack(payload[:-cut])


def test_receiver_turns_damage_into_a_reported_loss():
    class NoNetwork:  # the receiver must not run its network for a payload it rejects
        config, processor, gpu_seconds = ModelConfig(), "cpu", None

        def run(self, graph, feeds):
            raise AssertionError("a rejected payload reached the receiver graph")

    rec = Receiver(NoNetwork()).receive(b"LSC" + os.urandom(60), 12, 9)
    assert rec.lost and "damaged" in rec.reason and rec.image.shape == (12, 9, 3)


def smooth_levels(seed=0, h=24, w=31, L=8):
    """A depth map like ASC's: smooth, skewed towards shallow levels."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 6 + 2, w // 6 + 2)) ** 2
    return np.clip(np.ceil(np.kron(coarse, np.ones((6, 6)))[:h, :w] * L), 1, L).astype(np.int64)


@pytest.mark.parametrize("L", [1, 2, 4, 8, 16])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (13, 17)])
def test_coded_depth_maps_round_trip_exactly(L, shape):
    rng = np.random.default_rng(L * 100 + shape[0])
    for levels in (rng.integers(1, L + 1, shape), np.full(shape, L), smooth_levels(L, *shape, L)):
        assert np.array_equal(decode_levels(encode_levels(levels, L), shape, L), levels)


def test_a_real_depth_map_round_trips_and_codes_short():
    from lamsc.semcom.asc_levels import depth_levels
    from lamsc.semcom.fallback import FallbackSegmenter
    from lamsc.semcom.images import bundled_photos
    from lamsc.semcom.model import load_model
    from lamsc.semcom.transmission import Transmitter, model_inputs

    tx = Transmitter(load_model(None), FallbackSegmenter())
    image = bundled_photos(["coins"])[0].pixels
    x, masks = model_inputs(image, tx.segmenter.segment(image), tx.config.segments)
    out = tx.backend.run("transmitter", {"image": x, "masks": masks, "snr_db": np.array([10.0], np.float32)})
    levels = depth_levels(out["depth"][0, 0], 8)
    section, coded = depth_map_section(levels, 8)
    # shorter than the bit-packed map (3 bits a position); the shipped model's map of coins codes to 0.68 of it
    assert coded and len(section) < 0.8 * levels.size * 3 / 8
    assert np.array_equal(decode_levels(encode_levels(levels, 8), levels.shape, 8), levels)


def test_a_payload_carries_the_shorter_depth_map():
    rng = np.random.default_rng(8)
    smooth = Features(rng.normal(0, 1, (16, 24, 31)).astype(np.float32), smooth_levels(), 8)
    payload = pack(smooth, 192, 248)
    assert payload[4] & FLAG_DEPTH_CODED
    out = unpack(payload)
    assert np.array_equal(out.features.levels, smooth.levels)
    assert parse(payload).level_bytes == pack_bits(smooth.levels.ravel() - 1, 3)  # what the CUDA unpack reads
    assert len(payload) < len(pack(features(8, h=24, w=31), 192, 248))
    assert not pack(features(9), 40, 56)[4] & FLAG_DEPTH_CODED  # noise-like and small: bit-packed is shorter


def test_every_single_bit_flip_in_a_coded_depth_map_payload_is_detected():
    rng = np.random.default_rng(10)
    f = Features(rng.normal(0, 1, (4, 12, 12)).astype(np.float32), smooth_levels(3, 12, 12, 4), 4)
    payload = pack(f, 96, 96, 3)
    assert payload[4] & FLAG_DEPTH_CODED
    for i in range(len(payload) * 8):
        damaged = bytearray(payload)
        damaged[i // 8] ^= 0x80 >> (i % 8)
        with pytest.raises(PayloadError):
            unpack(bytes(damaged))
