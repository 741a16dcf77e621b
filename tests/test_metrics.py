"""Metrics against closed forms and independent implementations (scikit-image, pytorch-msssim)."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lamsc.semcom.metrics import bits, bits_per_pixel, ms_ssim, psnr, ssim, weighted_psnr


@pytest.fixture
def pair(photo):
    rng = np.random.default_rng(0)
    noisy = np.clip(photo.astype(np.int16) + rng.normal(0, 12, photo.shape).round(), 0, 255).astype(np.uint8)
    return photo, noisy


def test_psnr_closed_form():
    x = torch.zeros(1, 3, 8, 8)
    y = x + 0.1  # MSE = 0.01 -> 20 dB exactly
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-6)  # 0.1 is inexact in float32
    assert np.isinf(psnr(x, x)).all()


def test_psnr_matches_scikit_image(pair):
    a, b = pair
    assert psnr(a, b).item() == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-6)


def test_ssim_matches_scikit_image(pair):
    a, b = pair
    ref = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=255)
    assert ssim(a, b).item() == pytest.approx(ref, abs=5e-3)  # borders are handled differently


def test_ms_ssim_orders_quality(pair, photo):
    a, b = pair
    assert ms_ssim(a, a).item() == pytest.approx(1.0, abs=1e-6)
    worse = np.clip(b.astype(int) + (b.astype(int) - a), 0, 255).astype(np.uint8)
    assert 0 < ms_ssim(a, worse).item() < ms_ssim(a, b).item() < 1
    small = photo[:64, :64]  # too small for five scales: not a number rather than a different metric
    assert np.isnan(ms_ssim(small, pair[1][:64, :64])).all()


@pytest.mark.parametrize("crop", [(None, None), (301, 437)])  # odd sides: each scale pads before halving
def test_ssim_and_ms_ssim_match_pytorch_msssim(pair, crop):
    from pytorch_msssim import ms_ssim as ref_ms_ssim, ssim as ref_ssim

    a, b = (p[: crop[0], : crop[1]] for p in pair)
    ta, tb = (torch.from_numpy(p).permute(2, 0, 1)[None].double() / 255.0 for p in (a, b))
    # pytorch-msssim builds its Gaussian window in float32 (1e-8 off the float64 one): agreement to 1e-5; with
    # its window in place the two agree to float64 rounding
    assert ssim(a, b).item() == pytest.approx(ref_ssim(ta, tb, data_range=1.0).item(), abs=1e-5)
    assert ms_ssim(a, b).item() == pytest.approx(ref_ms_ssim(ta, tb, data_range=1.0).item(), abs=1e-5)


def test_bits_are_the_payload_length():
    payload = bytes(range(37))
    assert bits(payload) == 296
    assert bits_per_pixel(payload, 4, 2) == 37.0


def test_bd_rate_against_closed_forms():
    from lamsc.semcom.metrics import bd_rate

    psnr = np.array([28.0, 31.0, 34.0, 37.0, 40.0])
    anchor = 10.0 ** (0.002 * (psnr - 30) ** 3 - 0.01 * (psnr - 30) ** 2 + 0.1 * psnr - 3.5)  # a cubic in log rate
    # the same curve at 0.8 x the rate everywhere: -20 %, over any overlap
    assert bd_rate(anchor, psnr, 0.8 * anchor, psnr) == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate(anchor, psnr, 0.8 * anchor[1:], psnr[1:]) == pytest.approx(-20.0, abs=1e-9)
    # log10 rate linear in PSNR with slope b, the test curve d dB higher at every rate: 10^(-b d) - 1
    b, d = 0.12, 1.5
    linear = 10.0 ** (b * psnr - 4.0)
    assert bd_rate(linear, psnr, linear, psnr + d) == pytest.approx((10 ** (-b * d) - 1) * 100, abs=1e-9)
    assert np.isnan(bd_rate(anchor, psnr, anchor, psnr + 20.0))  # no common PSNR range
    with pytest.raises(ValueError):
        bd_rate(anchor[:3], psnr[:3], anchor[:3], psnr[:3])


def test_weighted_psnr_against_a_float64_reference(pair):
    a, b = pair
    rng = np.random.default_rng(1)
    w = rng.random(a.shape[:2])
    w[:, :50] = 0.0  # pixels that do not count
    d2 = ((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2  # (H, W, 3)
    wmse = sum(float((w * d2[..., c]).sum()) for c in range(3)) / (3.0 * float(w.sum()))
    # uint8 images become float32 in [0, 1] before the float64 sums, as for psnr: agreement to 1e-6 dB
    assert weighted_psnr(a, b, w).item() == pytest.approx(10.0 * np.log10(1.0 / wmse), abs=1e-6)
    # errors only where the weight is 0: they do not count, and what counts is exact
    c = a.copy()
    c[:, :50] = 255 - c[:, :50]
    assert np.isinf(weighted_psnr(a, c, w)).all() and np.isfinite(psnr(a, c).item())


def test_weighted_psnr_of_a_region_is_that_regions_psnr_and_flat_weights_give_psnr(pair):
    a, b = pair
    region = np.zeros(a.shape[:2])
    region[100:220, 150:400] = 0.7  # any positive constant on a region: the PSNR of that region alone
    ref = peak_signal_noise_ratio(a[100:220, 150:400], b[100:220, 150:400], data_range=255)
    assert weighted_psnr(a, b, region).item() == pytest.approx(ref, abs=1e-6)
    assert weighted_psnr(a, b, np.full(a.shape[:2], 3.0)).item() == pytest.approx(psnr(a, b).item(), abs=1e-9)
    # a batch, one weight map per image (N, 1, H, W); a map of zeros is undefined, not a number
    x, y = torch.from_numpy(np.stack([a, a])).permute(0, 3, 1, 2) / 255.0, torch.from_numpy(np.stack([b, b]))
    maps = torch.stack([torch.from_numpy(region), torch.zeros(a.shape[:2], dtype=torch.float64)])[:, None]
    out = weighted_psnr(x, y.permute(0, 3, 1, 2) / 255.0, maps)
    assert out[0].item() == pytest.approx(ref, abs=1e-4) and np.isnan(out[1])  # float32 inputs
    with pytest.raises(ValueError):
        weighted_psnr(a, b, -region)
