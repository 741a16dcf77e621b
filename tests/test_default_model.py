"""The shipped default model on photographs it was never trained on (scikit-image's bundled set, centre crops of
at most 512 x 512): the claims of the codec issue, measured in one run. benchmarks/default_model_quality.py
measures the same on the whole photographs."""

import numpy as np
import pytest
from PIL import Image

from lamsc.semcom import metrics
from lamsc.semcom.channels import Channel
from lamsc.semcom.fallback import FallbackSegmenter
from lamsc.semcom.images import NamedImage, bundled_photos
from lamsc.semcom.model import load_model
from lamsc.semcom.segmenter import CachedSegmenter
from lamsc.semcom.transmission import Receiver, Transmitter, transmit


SIDE = 512  # the photographs' centre crops at most this side: the two largest are 4 and 8 times 512 x 512's pixels


# the links are computed once, on one worker (pytest -n 2 --dist loadgroup)
pytestmark = pytest.mark.xdist_group("default_model")


@pytest.fixture(scope="session")
def runs():
    model, seg = load_model(), CachedSegmenter(FallbackSegmenter())  # one segmentation per photograph
    photos = [centre_crop(p) for p in bundled_photos()]
    out = {}
    for snr in (0.0, 10.0, 20.0):
        for asc in ((True, False, 1 / 48) if snr == 10.0 else (1 / 48,)):  # on, off, at CBR 1/48
            tx = Transmitter(model, seg, asc=bool(asc), snr_db=snr, cbr=None if isinstance(asc, bool) else asc)
            rx = Receiver(model)
            out[snr, asc] = [transmit(p.pixels, tx, rx, Channel("awgn", snr), seed=k) for k, p in enumerate(photos)]
    # ASC held to 60% of the channel uses everything takes, photograph by photograph
    rx = Receiver(model)
    out[10.0, "60%"] = [transmit(p.pixels, Transmitter(model, seg, snr_db=10.0, cbr=0.6 * full.cbr), rx,
                                 Channel("awgn", 10.0), seed=k)
                        for k, (p, full) in enumerate(zip(photos, out[10.0, False]))]
    return photos, out


def centre_crop(photo: NamedImage) -> NamedImage:
    h, w = photo.pixels.shape[:2]
    y, x = max(0, (h - SIDE) // 2), max(0, (w - SIDE) // 2)
    return NamedImage(photo.name, np.ascontiguousarray(photo.pixels[y: y + SIDE, x: x + SIDE]))


def _guesses(photos):
    """PSNR of a mean-colour guess and of a blurred one (a noiseless 1/16-scale thumbnail, bicubic back up)."""
    mean_c, blur = [], []
    for p in photos:
        h, w = p.pixels.shape[:2]
        flat = np.broadcast_to(p.pixels.reshape(-1, 3).mean(0).round().astype(np.uint8), p.pixels.shape)
        mean_c.append(float(metrics.psnr(p.pixels, np.ascontiguousarray(flat))))
        small = Image.fromarray(p.pixels).resize((max(1, w // 16), max(1, h // 16)), Image.BICUBIC)
        blur.append(float(metrics.psnr(p.pixels, np.asarray(small.resize((w, h), Image.BICUBIC)))))
    return float(np.mean(mean_c)), float(np.mean(blur))


def test_reconstruction_is_well_above_a_mean_colour_guess(runs):
    photos, out = runs
    mean_colour, thumbnail = _guesses(photos)
    ours = float(np.mean([r.psnr for r in out[10.0, True]]))
    assert ours > mean_colour + 6.0, (ours, mean_colour)
    # A noiseless 1/16 bicubic thumbnail sends fewer values over no channel at all; the shipped default
    # stays within 2 dB of it.
    assert ours > thumbnail - 2.0, (ours, thumbnail)


def test_asc_saves_40_percent_of_channel_uses_for_at_most_1_db(runs):
    _, out = runs
    on, off = out[10.0, "60%"], out[10.0, False]
    assert all(a.channel_uses <= 0.6 * b.channel_uses + 1 for a, b in zip(on, off))
    assert np.mean([r.psnr for r in off]) - np.mean([r.psnr for r in on]) <= 1.0


def test_the_mask_ratio_adapts_to_the_image(runs):
    _, out = runs
    kept = np.array([r.kept_ratio for r in out[10.0, True]])
    assert kept.max() - kept.min() > 0.05, kept


def test_quality_degrades_gracefully_with_snr(runs):
    _, out = runs  # at the same channel uses (CBR 1/48) at every SNR
    psnr = {snr: np.mean([r.psnr for r in out[snr, 1 / 48]]) for snr in (0.0, 10.0, 20.0)}
    assert psnr[0.0] < psnr[10.0] <= psnr[20.0], psnr
    assert psnr[10.0] - psnr[0.0] < 6.0  # no cliff: 0 dB costs a few dB, not the picture
    assert not any(r.reconstruction.lost for rs in out.values() for r in rs)


def test_the_shipped_model_records_no_build_machine_paths():
    """Every --json output repeats the model's provenance: it names data folders, never where they were."""
    from pathlib import PurePosixPath, PureWindowsPath

    trained = load_model().config.trained
    assert trained["data"] and not any(PurePosixPath(d).is_absolute() or PureWindowsPath(d).is_absolute()
                                       for d in trained["data"])


def test_print_of_a_link_result_shows_its_figures_not_its_pixels():
    from lamsc.semcom.transmission import LinkResult, Reconstruction

    r = LinkResult("lamsc", Reconstruction(np.zeros((480, 640, 3), np.uint8)), 1000, 500, 0.01, 0.5, 25.0, 0.9,
                   float("nan"))
    text = repr(r)
    assert text.startswith("LinkResult(name='lamsc', bits=1000") and "array" not in text and len(text) < 300
    assert (repr(Reconstruction(np.zeros((4, 6, 3), np.uint8), lost=True, reason="CRC"))
            == "Reconstruction(4x6, lost: CRC)")
