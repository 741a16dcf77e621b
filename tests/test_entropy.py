"""The digital mode: entropy coding under a learned density, its payload, its coded link and its commands."""

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lamsc.cli import main
from lamsc.errors import UserError
from lamsc.semcom.channels import Channel
from lamsc.semcom.entropy import (CONTEXT_EDGES, CONTEXTS, STEPS, DigitalMode, EntropyModel, contexts,
                                  decode_features, density_path, effective_snr, encode_features,
                                  load_entropy_model, nearest_step)
from lamsc.semcom.entropy_fit import (FactorizedDensity, fit_entropy_model, fit_kept_fractions, frontier,
                                      kept_features, tables_from, with_contexts)
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import bundled_photos
from lamsc.semcom.mcs import TransportBlock, mcs_by_name
from lamsc.semcom.config import ModelConfig
from lamsc.semcom.model import LamscModel
from lamsc.semcom.payload import PayloadError, parse, unpack
from lamsc.semcom.transmission import Receiver, Transmitter, transmit

TINY = dict(channels=8, width=16, num_levels=4, segments=2)


def small(name: str, size=(96, 128)) -> np.ndarray:
    (photo,) = bundled_photos([name])
    return np.array(Image.fromarray(photo.pixels).resize(size[::-1], Image.LANCZOS))


# the module's fixtures are built once, on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("entropy")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny random model saved as a checkpoint, its density fitted on two small photographs and saved beside it."""
    torch.manual_seed(0)
    model = LamscModel(ModelConfig(**TINY)).eval()
    base = tmp_path_factory.mktemp("digital") / "tiny"
    model.save(base)
    entropy = fit_entropy_model(model, [small("astronaut"), small("coffee")], FallbackSegmenter(), steps=80,
                                batch=1024)
    entropy.save(density_path(base), base.with_suffix(".safetensors"))
    return base, model, entropy


@pytest.fixture(scope="module")
def image():
    return small("chelsea", (128, 192))


def random_entropy_model(channels: int, largest: list[float]) -> EntropyModel:
    """A random density whose context tables are made of random counts, so that every bin codes differently."""
    torch.manual_seed(1)
    density = FactorizedDensity(channels)
    prior = tables_from(density, np.array(largest))
    rng = np.random.default_rng(5)
    counts = [rng.integers(0, 50, p.shape).astype(np.float64) for p in prior.pmf]
    weights = {k: v.detach().numpy() for k, v in density.state_dict().items()}
    return EntropyModel(weights, with_contexts(prior, counts), np.array(largest), {})


def test_range_coding_round_trips_random_integers():
    entropy = random_entropy_model(3, [2.0, 4.0, 6.0])
    rng = np.random.default_rng(0)
    for step in (STEPS[0], STEPS[10], STEPS[-1]):
        low, high = entropy.tables.support(step)
        symbols = rng.integers(low[:, None, None], high[:, None, None] + 1, (3, 13, 17))
        symbols[:, 0, :2] = np.stack([low, high], 1)  # both ends of each channel's support
        kept = rng.random((3, 13, 17)) < 0.7
        stream = entropy.encode(symbols, kept, step)
        assert np.array_equal(entropy.decode(stream, kept, step), np.where(kept, symbols, 0))
        rate = entropy.rate_bits(symbols, kept, step)
        assert abs(8 * len(stream) - rate) <= 0.02 * rate + 64, (step, 8 * len(stream), rate)
    # maps one wavefront wide or tall, and nothing sent
    for shape, p_kept in (((3, 1, 1), 1.0), ((3, 1, 6), 0.8), ((3, 5, 1), 0.8), ((3, 4, 2), 0.8), ((3, 3, 4), 0.0)):
        low, high = entropy.tables.support(STEPS[12])
        symbols = rng.integers(low[:, None, None], high[:, None, None] + 1, shape)
        kept = rng.random(shape) < p_kept
        back = entropy.decode(entropy.encode(symbols, kept, STEPS[12]), kept, STEPS[12])
        assert np.array_equal(back, np.where(kept, symbols, 0)), shape
    with pytest.raises(ValueError, match="outside its channel's support"):
        entropy.encode(np.full((3, 2, 2), 10**6), np.ones((3, 2, 2), bool), STEPS[12])
    # the clip rule: beyond the support, the nearest end of it
    low, high = entropy.tables.support(STEPS[10])
    assert np.array_equal(entropy.quantise(np.full((3, 2), [-1e6, 1e6]), STEPS[10]), np.stack([low, high], 1))
    assert len(set(high)) == 3  # each channel's support follows its own largest magnitude


def test_tables_and_fingerprint_survive_a_save_and_load(tmp_path):
    entropy = random_entropy_model(3, [2.0, 4.0, 6.0])
    back = EntropyModel.load(entropy.save(tmp_path / "d.safetensors"))
    assert back.tables.fingerprint == entropy.tables.fingerprint
    for a, b, n in zip(entropy.tables.pmf, back.tables.pmf, entropy.tables.size):
        assert np.array_equal(a, b)
        for c, size in enumerate(n):  # each distribution sums to one over its channel's support, zeros past it
            np.testing.assert_allclose(a[c, :, :size].sum(-1), 1.0, rtol=1e-5)
            assert not a[c, :, size:].any()


def test_a_damaged_density_file_is_a_user_error_naming_the_fit(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    path = random_entropy_model(3, [2.0, 4.0, 6.0]).save(tmp_path / "d.safetensors")
    with safe_open(str(path), "np") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    for label, damaged, meta_damaged in (
            ("largest", {k: v for k, v in tensors.items() if k != "largest"}, meta),
            ("provenance", tensors, {k: v for k, v in meta.items() if k != "provenance"}),
            ("steps", tensors, {**meta, "steps": "[0.5,"}),
            ("float64 tables", {**tensors, "pmf.0": tensors["pmf.0"].astype(np.float64)}, meta),
            ("an empty support", {**tensors, "size": np.where(np.arange(3) == 0, 0, tensors["size"])}, meta)):
        save_file(damaged, str(tmp_path / "bad.safetensors"), metadata=meta_damaged)
        with pytest.raises(UserError, match="lamsc density fit"):
            EntropyModel.load(tmp_path / "bad.safetensors")


def test_contexts_are_the_binned_weighted_mean_of_the_causal_neighbours_sent():
    """entropy.contexts against a loop over positions: the neighbours left, up, up-left and up-right (weights 3,
    3, 1, 1) inside the map and sent, their weighted mean times the step, binned between the mirrored edges."""
    rng = np.random.default_rng(3)
    symbols, kept, step = rng.integers(-9, 10, (2, 6, 7)), rng.random((2, 6, 7)) < 0.6, STEPS[12]
    edges = sorted([-e for e in CONTEXT_EDGES] + list(CONTEXT_EDGES))
    expected = np.zeros(kept.shape, np.int64)
    for c, i, j in np.ndindex(kept.shape):
        total = weight = 0
        for di, dj, wt in ((0, -1, 3), (-1, 0, 3), (-1, -1, 1), (-1, 1, 1)):
            if 0 <= i + di and 0 <= j + dj < 7 and kept[c, i + di, j + dj]:
                total, weight = total + wt * symbols[c, i + di, j + dj], weight + wt
        if weight:
            expected[c, i, j] = 1 + sum(step * total / weight > e for e in edges)
    assert np.array_equal(contexts(symbols, kept, step), expected)
    assert expected.max() < CONTEXTS and len(np.unique(expected)) > 5


def test_model_features_round_trip_and_the_rate_is_the_coded_length(fitted, image):
    _, model, entropy = fitted
    # the transmitter's features as sent (unit power), each channel's laid out on a 16 x 24 map
    values = kept_features(model, [image], FallbackSegmenter(), snrs=[15.0])
    z = np.stack([np.resize(v, 16 * 24).reshape(16, 24) for v in values])
    levels = np.random.default_rng(2).integers(1, 5, (16, 24))
    for step in (STEPS[4], STEPS[8], STEPS[12], STEPS[16]):
        stream, count = encode_features(entropy, z, levels, 4, step)
        back = decode_features(entropy, stream, levels, 4, 8, step)
        kept = np.arange(8)[:, None, None] < (levels * 2)[None]
        assert count == kept.sum() and np.all(back[~kept] == 0)
        q = entropy.quantise(z, step)
        assert np.array_equal(back[kept], (q * np.float64(step))[kept].astype(np.float32))  # what was quantised
        rate = entropy.rate_bits(q, kept, step)
        assert abs(8 * len(stream) - rate) <= 0.02 * rate, (step, 8 * len(stream), rate)


def test_density_file_loads_beside_its_model_and_says_how_to_fit_one(fitted, tmp_path):
    base, _, entropy = fitted
    loaded = load_entropy_model(base.with_suffix(".safetensors"))
    assert loaded.tables.fingerprint == entropy.tables.fingerprint
    assert loaded.provenance["steps"] == 80
    other = LamscModel(ModelConfig(**TINY))
    with torch.no_grad():  # the autouse seed would otherwise rebuild the fixture's weights exactly
        next(other.parameters()).add_(1.0)
    other.save(tmp_path / "other")
    with pytest.raises(UserError, match="lamsc density fit --model"):
        load_entropy_model(tmp_path / "other")
    density_path(base).rename(density_path(tmp_path / "other"))  # the density of another model
    try:
        with pytest.raises(UserError, match="fitted for another model"):
            load_entropy_model(tmp_path / "other")
    finally:
        density_path(tmp_path / "other").rename(density_path(base))


def test_a_density_fits_the_model_whose_decoder_alone_changed(fitted, tmp_path):
    from lamsc.semcom.entropy import transmitter_sha256

    base, _, entropy = fitted
    tuned = LamscModel.load(base)
    with torch.no_grad():
        tuned.decoder.out.weight.add_(0.5)  # the decoder alone: the features and what is sent stay the same
    tuned.save(tmp_path / "tuned")
    assert transmitter_sha256(tmp_path / "tuned.safetensors") == transmitter_sha256(base.with_suffix(".safetensors"))
    density_path(base).rename(density_path(tmp_path / "tuned"))
    try:
        assert load_entropy_model(tmp_path / "tuned").tables.fingerprint == entropy.tables.fingerprint
        with torch.no_grad():
            tuned.mask_net.conv2.bias.add_(0.5)  # ASC chooses otherwise: another transmitter
        tuned.save(tmp_path / "tuned")
        with pytest.raises(UserError, match="fitted for another model"):
            load_entropy_model(tmp_path / "tuned")
    finally:
        density_path(tmp_path / "tuned").rename(density_path(base))


def test_effective_snr_is_the_quantisation_noise_clipped_to_the_models_range():
    assert effective_snr(1.0, (0.0, 20.0)) == pytest.approx(10 * math.log10(12))
    assert effective_snr(STEPS[0], (0.0, 20.0)) == 20.0
    assert effective_snr(4.0, (0.0, 20.0)) == 0.0
    assert nearest_step(0.3) == pytest.approx(2 ** -1.75)
    with pytest.raises(UserError):
        nearest_step(0.0)


def test_every_single_bit_flip_of_a_digital_payload_is_detected(fitted, image):
    _, model, entropy = fitted
    payload = Transmitter(model, FallbackSegmenter(), digital=DigitalMode(entropy, STEPS[12])).send(image).payload
    parsed = parse(payload)
    assert parsed.entropy_id == entropy.tables.fingerprint and parsed.value_bits == 0
    with pytest.raises(PayloadError, match="entropy-coded"):
        unpack(payload)  # the fixed-width reader says what it is, and does not misread it
    for i in range(len(payload) * 8):
        damaged = bytearray(payload)
        damaged[i // 8] ^= 0x80 >> (i % 8)
        with pytest.raises(PayloadError):
            parse(bytes(damaged))


def test_receiver_decodes_the_digital_payload_at_its_quantisation_snr(fitted, image, monkeypatch):
    _, model, entropy = fitted
    step = STEPS[12]
    sent = Transmitter(model, FallbackSegmenter(), digital=DigitalMode(entropy, step)).send(image)
    told = []
    rx = Receiver(model, entropy=entropy)
    decode = rx.decode
    monkeypatch.setattr(rx, "decode", lambda *a: told.append(a[4]) or decode(*a))  # (values, levels, h, w, snr)
    rec = rx.receive(sent.payload, *image.shape[:2])
    assert not rec.lost and rec.image.shape == image.shape and rx.unpack_backend == "entropy"
    assert told == [pytest.approx(effective_snr(step, model.config.snr_range))]
    assert sent.value_bits + sent.side_bits == 8 * len(sent.payload)
    with pytest.raises(UserError, match="holds no entropy model"):
        Receiver(model).receive(sent.payload)
    with pytest.raises(UserError, match="channel budget"):
        Transmitter(model, FallbackSegmenter(), cbr=0.1, digital=DigitalMode(entropy, step))
    with pytest.raises(UserError, match="choose one of them"):
        DigitalMode(entropy, 0.3)


def test_digital_transmit_over_a_clean_coded_link_is_the_error_free_decode(fitted, image):
    _, model, entropy = fitted
    mode = DigitalMode(entropy, STEPS[12])
    tx, rx = Transmitter(model, FallbackSegmenter(), digital=mode), Receiver(model, entropy=entropy)
    error_free = rx.receive(tx.send(image).payload, *image.shape[:2])
    result = transmit(image, tx, rx, Channel("awgn", 30.0), seed=0)
    assert not result.reconstruction.lost
    assert np.array_equal(result.reconstruction.image, error_free.image)
    assert (result.name, result.link, result.mcs) == ("lamsc-digital", "digital", "64qam-5/6")
    block = TransportBlock.carrying(result.bits // 8, mcs_by_name("64qam-5/6"))  # the fewest uses that carry it
    assert result.coded_bits == block.coded_bits > result.bits and block.message_bits >= result.bits
    assert result.channel_uses == result.coded_bits // 6


def test_a_failed_code_block_loses_the_digital_payload(fitted, image):
    _, model, entropy = fitted
    tx = Transmitter(model, FallbackSegmenter(), digital=DigitalMode(entropy, STEPS[12]))
    result = transmit(image, tx, Receiver(model, entropy=entropy), Channel("awgn", -6.0), seed=0)
    assert result.reconstruction.lost and "code blocks failed" in result.reconstruction.reason
    assert (result.reconstruction.image == 128).all() and result.mcs == "qpsk-1/3"


def test_density_fit_and_transmit_digital_commands(tmp_path, capsys, image):
    torch.manual_seed(3)
    LamscModel(ModelConfig(**TINY)).save(tmp_path / "m")
    Image.fromarray(image).save(tmp_path / "fit.png")
    assert main(["density", "fit", "--model", str(tmp_path / "m"), "--images", str(tmp_path / "fit.png"),
                 "--steps", "20", "--kept-images", "1", "--json"]) == 0
    fit = json.loads(capsys.readouterr().out)["results"]
    assert fit["density"] == str(density_path(tmp_path / "m")) and fit["kept_images"] == 1
    assert fit["kept"] == list(load_entropy_model(tmp_path / "m").kept) and fit["quantiser_steps"] == list(STEPS)
    assert fit["steps"] == 20 and len(fit["kept"]) == len(STEPS)
    assert main(["transmit", str(tmp_path / "fit.png"), "--model", str(tmp_path / "m.safetensors"), "--digital",
                 "--step", "0.3", "--snr", "20", "--out", str(tmp_path / "o"), "--json"]) == 0
    out = capsys.readouterr()
    results = json.loads(out.out)["results"]
    (row,) = results["images"]
    fitted_kept = load_entropy_model(tmp_path / "m").kept_at(nearest_step(0.3))
    assert results["digital"] == {"step": nearest_step(0.3), "kept": fitted_kept,
                                  "kept_from": "fitted for this step by lamsc density fit"}
    assert row["lamsc"]["link"] == "digital" and row["lamsc"]["mcs"] == "64qam-5/6" and not row["lamsc"]["lost"]
    assert "0.3 -> 0.297302" in out.err
    assert main(["transmit", str(tmp_path / "fit.png"), "--model", str(tmp_path / "nothing"), "--digital"]) == 2
    for wrong, said in ((["--kept", "0.3"], "--kept sets the digital mode's fraction of features: add --digital"),
                        (["--step", "0.3"], "--step sets the digital mode's quantiser step: add --digital"),
                        (["--digital", "--channel", "digital-qpsk"], "give it an analog channel (awgn, rayleigh)")):
        assert main(["transmit", str(tmp_path / "fit.png"), "--model", str(tmp_path / "m.safetensors"), *wrong]) == 2
        assert said in capsys.readouterr().err
    assert main(["transmit", str(tmp_path / "fit.png"), "--model", str(tmp_path / "m.safetensors"), "--digital",
                 "--snr", "-8", "--out", str(tmp_path / "o")]) == 0
    assert "no MCS reaches a BLER of 1% at -8 dB" in capsys.readouterr().err
    mode = os.stat(density_path(tmp_path / "m")).st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # readable as the umask allows, not only by its owner as safetensors writes


def test_digital_mode_sends_the_kept_fraction_asked_for(fitted, image):
    _, model, entropy = fitted
    rx = Receiver(model, entropy=entropy)
    sizes = []
    for kept in (0.3, 0.6, 1.0):
        sent = Transmitter(model, FallbackSegmenter(), digital=DigitalMode(entropy, STEPS[12], kept)).send(image)
        per_level, positions = model.config.channels // model.config.num_levels, int(parse(sent.payload).levels.size)
        # whole levels of per_level channels per position, never above the target; the positions of a block share
        # its mean depth and cross a level together, so the shortfall is bounded by a few percent, not by one
        assert kept - 0.05 <= sent.kept_ratio <= kept + 1e-9 and sent.value_count % per_level == 0
        assert sent.kept_ratio == sent.value_count / (positions * model.config.channels)
        assert sent.value_count == int(parse(sent.payload).levels.sum()) * per_level  # the depth map says it
        assert not rx.receive(sent.payload, *image.shape[:2]).lost
        sizes.append(len(sent.payload))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    with pytest.raises(UserError, match=r"kept fraction of 0: give one in \(0, 1\]"):
        DigitalMode(entropy, STEPS[12], 0.0)
    with pytest.raises(UserError, match="with ASC off every feature is sent"):
        Transmitter(model, FallbackSegmenter(), asc=False, digital=DigitalMode(entropy, STEPS[12], 0.3))


def test_kept_fractions_lie_closest_to_the_rate_quality_frontier(fitted, image, tmp_path):
    """fit_kept_fractions against the same choice made by hand, on two steps, three fractions and three
    photographs: each photograph's (log bits per pixel, PSNR) per pair, its upper hull from scipy's ConvexHull
    (held flat past its highest point), and per step the fraction with the smallest median deficit below, no
    larger than the finer step's."""
    from dataclasses import replace

    from scipy.spatial import ConvexHull

    _, model, entropy = fitted
    two = replace(entropy, tables=replace(entropy.tables, steps=entropy.tables.steps[0:9:8]))
    two.tables.low, two.tables.size = entropy.tables.low[0:9:8], entropy.tables.size[0:9:8]
    two.tables.pmf = entropy.tables.pmf[0:9:8]
    candidates = (0.25, 0.6, 1.0)
    photos = [image, small("coffee", (128, 160)), small("chelsea", (96, 128))]
    chosen = fit_kept_fractions(model, two, photos, FallbackSegmenter(), candidates)
    rx, deficits = Receiver(model, entropy=two), []
    for photo in photos:
        points = []
        for step in two.tables.steps:
            for kept in candidates:
                tx = Transmitter(model, FallbackSegmenter(), digital=DigitalMode(two, step, kept))
                payload = tx.send(photo).payload
                shown = rx.receive(payload, *photo.shape[:2]).image
                points.append((np.log(8 * len(payload) / photo.shape[0] / photo.shape[1]),
                               10 * np.log10(1 / np.mean((shown / 255.0 - photo / 255.0) ** 2))))
        points = np.array(points)
        hull = ConvexHull(points)
        upper = hull.equations[hull.equations[:, 1] > 1e-12]  # facets a x + b y + c <= 0 bounding y from above
        top = points[np.argmax(points[:, 1]), 0]
        envelope = [min((-c - a * min(x, top)) / b for a, b, c in upper) for x, _ in points]
        deficit = (np.array(envelope) - points[:, 1]).reshape(2, len(candidates))
        assert (deficit > -1e-9).all() and np.isclose(deficit.min(), 0, atol=1e-9)
        deficits.append(deficit)
    best = [candidates[int(np.argmin(row))] for row in np.median(deficits, axis=0)]
    assert chosen == (best[0], min(best))  # the coarser step never sends a larger fraction
    two.kept = chosen
    two.save(tmp_path / "d.safetensors")
    back = EntropyModel.load(tmp_path / "d.safetensors")
    assert back.kept == chosen and back.kept_at(two.tables.steps[1]) == chosen[1]
    assert DigitalMode(back, two.tables.steps[0]).kept_fraction == chosen[0]
    assert DigitalMode(back, two.tables.steps[0], 0.5).kept_fraction == 0.5
    assert DigitalMode(entropy, STEPS[12]).kept_fraction is None  # no rule fitted: ASC's own choice
    two.kept = (chosen[0], 1.5)
    two.save(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match=r"kept fractions \[.*1\.5\] for 2 quantiser steps"):
        EntropyModel.load(tmp_path / "bad.safetensors")


def test_frontier_is_the_upper_hull_held_flat_past_its_top():
    """A known hull: (0, 0), (1, 2), (3, 3) span it; (2, 1) lies under it, (1, 1) shares an x with a
    higher point, and (4, 2.5), past the top, is dominated: the frontier stays at 3 there."""
    x, y = np.array([0.0, 1, 1, 2, 3, 4]), np.array([0.0, 1, 2, 1, 3, 2.5])
    f = frontier(x, y)
    np.testing.assert_allclose(f(np.array([0.0, 0.5, 1, 2, 3, 3.5, 4])), [0, 1, 2, 2.5, 3, 3, 3])


def test_the_shipped_density_sends_fewer_features_at_coarser_steps():
    """load_entropy_model() is the shipped model's density; its kept fractions, one per step, never grow
    with the step, so its payloads shrink as the step grows."""
    from lamsc.semcom.config import DEFAULT_MODEL

    shipped = load_entropy_model()
    assert shipped.tables.fingerprint == load_entropy_model(DEFAULT_MODEL).tables.fingerprint
    assert len(shipped.kept) == len(shipped.tables.steps) and list(shipped.kept) == sorted(shipped.kept, reverse=True)
