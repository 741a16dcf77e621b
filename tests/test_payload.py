"""Payload: exact round trips, every single-bit flip detected, foreign bytes rejected."""

import os

import numpy as np
import pytest

from lamsc.semcom.model import ModelConfig
from lamsc.semcom.payload import Features, PayloadError, pack, pack_bits, unpack, unpack_bits
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
