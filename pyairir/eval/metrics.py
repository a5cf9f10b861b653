"""PSNR and SSIM exactly as the papers' evaluation code computes them.

protocol="promptir" (PromptIR, AdaIR test.py: utils/val_utils.compute_psnr_ssim): RGB float
images clipped to [0, 1]; scikit-image's peak_signal_noise_ratio(data_range=1) and
structural_similarity(data_range=1, channel_axis=-1): 7x7 uniform window, sample covariance,
K1 = 0.01, K2 = 0.03, averaged over the valid region and the channels.

protocol="basicsr" (Restormer, NAFNet, SIPL, CPLIR: basicsr.metrics calculate_psnr/ssim): images
rounded to 8 bits, on the 0-255 scale; `y_channel` compares BT.601 luma (16-235) only;
`crop_border` pixels are dropped on each side; SSIM with an 11x11 Gaussian window (sigma 1.5),
population covariance, over the valid region, averaged over the channels.

Both take (B, 3, H, W) or (3, H, W) tensors and return one value per image (B,), in float64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PROTOCOLS = ("promptir", "basicsr")


def _batched(x: torch.Tensor) -> torch.Tensor:
    return x[None] if x.dim() == 3 else x


def _prepare(restored: torch.Tensor, clean: torch.Tensor, protocol: str, y_channel: bool, crop_border: int):
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; available: {', '.join(PROTOCOLS)}")
    restored, clean = _batched(restored).double(), _batched(clean).double()
    if restored.shape != clean.shape:
        raise ValueError(f"restored {tuple(restored.shape)} and clean {tuple(clean.shape)} differ in shape")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be an integer of 0 or more, got {crop_border!r}")
    if protocol == "promptir":
        if crop_border or y_channel:
            raise ValueError("crop_border and y_channel belong to the basicsr protocol; the promptir protocol "
                             f"compares whole RGB images, got crop_border={crop_border}, y_channel={y_channel}")
        return restored.clamp(0, 1), clean.clamp(0, 1), 1.0
    if 2 * crop_border >= min(restored.shape[-2:]):
        raise ValueError(f"crop_border {crop_border} leaves nothing of a {restored.shape[-2]}x{restored.shape[-1]} "
                         "image (it must be less than half the shorter side)")
    restored, clean = (x.clamp(0, 1).mul(255).round() for x in (restored, clean))
    if y_channel:
        weights = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64).view(1, 3, 1, 1)
        restored, clean = ((x / 255 * weights).sum(1, keepdim=True) + 16.0 for x in (restored, clean))
    if crop_border:
        restored = restored[..., crop_border:-crop_border, crop_border:-crop_border]
        clean = clean[..., crop_border:-crop_border, crop_border:-crop_border]
    return restored, clean, 255.0


def psnr(restored: torch.Tensor, clean: torch.Tensor, protocol: str = "promptir", y_channel: bool = False,
         crop_border: int = 0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: 10 log10(range^2 / MSE)."""
    a, b, data_range = _prepare(restored, clean, protocol, y_channel, crop_border)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _window(protocol: str) -> tuple[torch.Tensor, bool]:
    """The SSIM averaging window (k x k, sums to 1) and whether covariances use N - 1."""
    if protocol == "promptir":
        return torch.full((7, 7), 1 / 49, dtype=torch.float64), True
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-x ** 2 / (2 * 1.5 ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :], False


def ssim(restored: torch.Tensor, clean: torch.Tensor, protocol: str = "promptir", y_channel: bool = False,
         crop_border: int = 0) -> torch.Tensor:
    """Structural similarity per image, mean over the valid region and channels."""
    a, b, data_range = _prepare(restored, clean, protocol, y_channel, crop_border)
    window, sample_covariance = _window(protocol)
    k = window.shape[0]
    if a.shape[-1] < k or a.shape[-2] < k:
        raise ValueError(f"ssim: images must be at least {k}x{k}, got {tuple(a.shape[-2:])}")
    channels = a.shape[1]
    weight = window.expand(channels, 1, k, k)

    def mean(x):
        return F.conv2d(x, weight, groups=channels)

    mu_a, mu_b = mean(a), mean(b)
    norm = k * k / (k * k - 1) if sample_covariance else 1.0
    var_a = norm * (mean(a * a) - mu_a ** 2)
    var_b = norm * (mean(b * b) - mu_b ** 2)
    cov = norm * (mean(a * b) - mu_a * mu_b)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.flatten(2).mean(2).mean(1)

