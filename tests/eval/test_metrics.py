"""PSNR/SSIM against scikit-image, under both papers' protocols."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pyairir.eval import psnr, ssim


def pair(seed=0, shape=(3, 41, 53), noise=0.05):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(shape, generator=g, dtype=torch.float64)
    return (clean + noise * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1), clean


def hwc(x):
    return x.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_promptir_protocol_is_scikit_image(seed):
    restored, clean = pair(seed, noise=0.02 * (seed + 1))
    assert psnr(restored, clean).item() == pytest.approx(
        peak_signal_noise_ratio(hwc(clean), hwc(restored), data_range=1), abs=1e-10)
    assert ssim(restored, clean).item() == pytest.approx(
        structural_similarity(hwc(clean), hwc(restored), data_range=1, channel_axis=-1), abs=1e-10)


def test_basicsr_protocol():
    restored, clean = pair(3)
    r8, c8 = (np.round(hwc(x) * 255) for x in (restored, clean))
    assert psnr(restored, clean, "basicsr").item() == pytest.approx(
        peak_signal_noise_ratio(c8, r8, data_range=255), abs=1e-10)
    # BasicSR's SSIM: 11x11 Gaussian window (sigma 1.5), population covariance, 0-255 range
    assert ssim(restored, clean, "basicsr").item() == pytest.approx(
        structural_similarity(c8, r8, data_range=255, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False), abs=1e-10)


def test_basicsr_y_channel_and_border():
    restored, clean = pair(4)

    def luma(x):  # BT.601 on 8-bit RGB, as basicsr's to_y_channel
        x8 = np.round(hwc(x) * 255) / 255
        return x8 @ np.array([65.481, 128.553, 24.966]) + 16.0

    y_r, y_c = luma(restored)[4:-4, 4:-4], luma(clean)[4:-4, 4:-4]
    assert psnr(restored, clean, "basicsr", y_channel=True, crop_border=4).item() == pytest.approx(
        peak_signal_noise_ratio(y_c, y_r, data_range=255), abs=1e-9)
    assert ssim(restored, clean, "basicsr", y_channel=True, crop_border=4).item() == pytest.approx(
        structural_similarity(y_c, y_r, data_range=255, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False), abs=1e-9)


def test_batches_and_errors():
    restored, clean = pair(5)
    both = psnr(torch.stack([restored, clean]), torch.stack([clean, clean]))
    assert both.shape == (2,) and torch.isinf(both[1])
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(restored, clean[:, :-1])
    with pytest.raises(ValueError, match="unknown protocol 'matlab'"):
        ssim(restored, clean, "matlab")
    with pytest.raises(ValueError, match="unknown protocol 'matlab'; available: promptir, basicsr"):
        psnr(restored, clean, "matlab")


@pytest.mark.parametrize("protocol", ["promptir", "basicsr"])
def test_values_outside_the_range_are_clipped_first(protocol):
    """Both protocols clip restored and clean images to [0, 1] before comparing."""
    restored, clean = pair(6)
    wild_restored = restored.clone()
    wild_restored[:, :5] = -0.3
    wild_restored[:, 5:10] = 1.4
    wild_clean = clean.clone()
    wild_clean[:, 10:15] = -0.2
    wild_clean[:, 15:20] = 1.7
    for metric in (psnr, ssim):
        got = metric(wild_restored, wild_clean, protocol)
        expected = metric(wild_restored.clamp(0, 1), wild_clean.clamp(0, 1), protocol)
        assert got.item() == pytest.approx(expected.item(), abs=1e-12), metric.__name__


@pytest.mark.parametrize("protocol", ["promptir", "basicsr"])
def test_one_value_per_image_of_a_batch(protocol):
    images = [pair(seed, noise=0.02 * (seed + 1)) for seed in (7, 8)]
    restored, clean = (torch.stack(x) for x in zip(*images))
    basicsr = dict(y_channel=True, crop_border=2) if protocol == "basicsr" else {}
    for metric in (psnr, ssim):
        batched = metric(restored, clean, protocol, **basicsr)
        single = [metric(r, c, protocol, **basicsr).item() for r, c in images]
        assert batched.shape == (2,) and batched.tolist() == pytest.approx(single, abs=1e-12)


@pytest.mark.parametrize("protocol, window", [("promptir", 7), ("basicsr", 11)])
def test_ssim_needs_one_window_of_pixels(protocol, window):
    restored, clean = pair(9, shape=(3, window, window))
    assert ssim(restored, clean, protocol).item() <= 1.0  # exactly one window fits
    for shape in [(3, window - 1, 20), (3, 20, window - 1)]:
        restored, clean = pair(9, shape=shape)
        with pytest.raises(ValueError, match=rf"images must be at least {window}x{window}, got \({shape[1]}, "
                                             rf"{shape[2]}\)"):
            ssim(restored, clean, protocol)


@pytest.mark.parametrize("kwargs, message", [
    (dict(protocol="promptir", crop_border=4), "crop_border and y_channel belong to the basicsr protocol"),
    (dict(protocol="promptir", y_channel=True), "crop_border and y_channel belong to the basicsr protocol"),
    (dict(protocol="basicsr", crop_border=-1), "crop_border must be an integer of 0 or more, got -1"),
    (dict(protocol="basicsr", crop_border=1.5), "crop_border must be an integer of 0 or more, got 1.5"),
    (dict(protocol="basicsr", crop_border=6), "crop_border 6 leaves nothing of a 12x20 image"),
])
def test_crop_border_is_checked_not_ignored(kwargs, message):
    a, b = torch.rand(3, 12, 20), torch.rand(3, 12, 20)
    for metric in (psnr, ssim):
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            metric(a, b, **kwargs)
    assert psnr(a, b, protocol="basicsr", crop_border=5).isfinite().all()
