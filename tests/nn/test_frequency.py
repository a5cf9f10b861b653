"""AdaIR's frequency modules: the band split equal to the official FFT split with the mask its loop
cuts, at sizes where the bands are not empty (feature maps of 256 pixels and more, which the tiny
official fixtures never reach) and where they are, and clear errors."""

from __future__ import annotations

import pytest
import torch

from pyairir.nn import Chanel_Cross_Attention, FreModule
from pyairir.nn.frequency import band_split


def official_mask(shape: tuple[int, ...], rate: torch.Tensor, n: int = 128) -> torch.Tensor:
    """The official fft()'s mask, cut the way its loop cuts it: per sample, slices of a zero tensor."""
    mask = torch.zeros(shape, dtype=torch.float64)
    h, w = shape[-2:]
    for i in range(shape[0]):
        h_, w_ = int(h // n * rate[i, 0]), int(w // n * rate[i, 1])
        mask[i, :, h // 2 - h_: h // 2 + h_, w // 2 - w_: w // 2 + w_] = 1
    return mask


def module(dim: int = 16) -> FreModule:
    """A FreModule whose band rates grow with the mean of its input (about 0.6 to 0.95 for the
    inputs below), so that the rectangles are not empty and their truncated sides differ."""
    torch.manual_seed(0)
    m = FreModule(dim, num_heads=2, bias=False).double()
    with torch.no_grad():
        m.rate_conv[0].weight.fill_(0.1)
        m.rate_conv[2].weight.copy_(torch.tensor([[1.0, 0.5], [0.5, 0.3]], dtype=torch.float64)[..., None, None])
    return m


def features(b: int, c: int, h: int, w: int) -> torch.Tensor:
    """Positive features whose mean differs from sample to sample."""
    scale = torch.arange(1, b + 1, dtype=torch.float64)[:, None, None, None]
    return torch.rand(b, c, h, w, dtype=torch.float64) * scale


def official_split(x: torch.Tensor, rate: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) as the official code computes them from features x and rates (B, 2): the mask
    sliced per sample, the spectrum shifted, masked and shifted back, inverse FFT, magnitude."""
    h, w = x.shape[-2:]
    mask = official_mask(x.shape, rate)
    spectrum = torch.roll(torch.fft.fft2(x, norm="forward"), shifts=(h // 2, w // 2), dims=(2, 3))

    def back(s):
        return torch.fft.ifft2(torch.roll(s, shifts=(-(h // 2), -(w // 2)), dims=(2, 3)), norm="forward").abs()

    return back(spectrum * (1 - mask)), back(spectrum * mask)


RATES = torch.tensor([[0.4, 0.99], [0.7, 0.5], [0.999, 0.1]], dtype=torch.float64)


@pytest.mark.parametrize("h, w", [(300, 520), (256, 257), (511, 384), (255, 900), (7, 9)])
def test_band_split_is_the_official_fft_split(h, w):
    """band_split (a DFT restricted to the rectangle's frequencies) against the official FFT split,
    values and gradients, float64, three samples with different rectangles (and empty ones). The
    tolerance is float64 rounding: the two are different factorisations of one transform."""
    torch.manual_seed(0)
    x = torch.randn(3, 4, h, w, dtype=torch.float64, requires_grad=True)
    half_h, half_w = (h // 128 * RATES[:, :1]).long(), (w // 128 * RATES[:, 1:]).long()
    high, low = band_split(x, half_h, half_w)
    expected_high, expected_low = official_split(x, RATES)
    if h >= 384 and w >= 384:
        sides = set(zip(half_h.flatten().tolist(), half_w.flatten().tolist()))
        assert len(sides) == 3 and official_mask(x.shape, RATES).sum() > 0  # three different rectangles
    torch.testing.assert_close(high, expected_high, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(low, expected_low, rtol=1e-9, atol=1e-12)
    weights = torch.randn_like(high), torch.randn_like(low)
    got = torch.autograd.grad((high * weights[0] + low * weights[1]).sum(), x)
    expected = torch.autograd.grad((expected_high * weights[0] + expected_low * weights[1]).sum(), x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)  # no NaN where a band is empty


@pytest.mark.parametrize("h, w", [(300, 520), (256, 520)])
def test_bands_use_the_official_rectangle(h, w):
    """FreModule.bands: conv1, the rates of rate_conv, the split; against the official code, float64.
    The rates are about 0.96 for rows and 0.4 for columns, so rows and columns swapped would differ."""
    m = module()
    image = features(2, 3, h, w)
    with torch.no_grad():
        m.conv1.weight.abs_()  # positive features from a positive image
        m.rate_conv[2].weight.copy_(torch.tensor([[1.0, 0.5], [-0.1, -0.05]], dtype=torch.float64)[..., None, None])
        x = m.conv1(image)
        rate = torch.sigmoid(m.rate_conv(x.mean(dim=(2, 3), keepdim=True))).flatten(1)
        assert official_mask(x.shape, rate).sum() > 0
        for got, expected in zip(m.bands(image), official_split(x, rate)):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


def test_cross_attention_needs_one_shape():
    attention = Chanel_Cross_Attention(8, 2, bias=False)
    with pytest.raises(ValueError, match=r"x and y must have one shape, got \(1, 8, 4, 4\) and \(1, 8, 4, 5\)"):
        attention(torch.rand(1, 8, 4, 4), torch.rand(1, 8, 4, 5))
    with pytest.raises(ValueError, match=r"dim \(8\) must be divisible by num_head \(3\)"):
        Chanel_Cross_Attention(8, 3, bias=False)


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_fast_cross_attention_equals_eager(channels_last, bias):
    """fast=True, with autograd (depthwise convs apart) and without (both filters handed to the
    mdta op as one), against the eager module, float64."""
    torch.manual_seed(0)
    eager = Chanel_Cross_Attention(16, 2, bias=bias).double()
    fast = Chanel_Cross_Attention(16, 2, bias=bias, fast=True).double()
    with torch.no_grad():
        for p in eager.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast.load_state_dict(eager.state_dict())
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    x, y = (torch.randn(2, 16, 7, 9, dtype=torch.float64).contiguous(memory_format=memory_format) for _ in range(2))
    expected = eager(x, y)
    torch.testing.assert_close(fast(x, y), expected, atol=1e-12, rtol=1e-9)
    with torch.no_grad():
        torch.testing.assert_close(fast(x, y), expected, atol=1e-12, rtol=1e-9)

