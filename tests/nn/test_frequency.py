"""AdaIR's frequency modules: the band split as the official loop cuts it, at sizes where the
bands are not empty (feature maps of 256 pixels and more, which the tiny official fixtures never
reach), and clear errors."""

from __future__ import annotations

import pytest
import torch

from pyairir.nn import Chanel_Cross_Attention, FreModule


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


@pytest.mark.parametrize("h, w", [(300, 520), (256, 257), (511, 384), (255, 900)])
def test_band_mask_is_the_official_rectangle(h, w):
    m = module()
    x = features(3, 16, h, w)
    rate = torch.sigmoid(m.rate_conv(x.mean(dim=(2, 3), keepdim=True))).flatten(1)
    expected = official_mask(x.shape, rate)
    got = m.band_mask(x).expand_as(x)
    assert torch.equal(got, expected)
    if h >= 256 and w >= 256:
        assert expected.sum() > 0  # not the degenerate empty band


def test_bands_are_the_shifted_spectrum_split():
    """high and low as the official code computes them: shift the spectrum, mask, shift back."""
    m = module()
    image = features(2, 3, 260, 300)
    with torch.no_grad():
        m.conv1.weight.abs_()  # positive features from a positive image
    high, low = m.bands(image)
    x = m.conv1(image)
    h, w = x.shape[-2:]
    rate = torch.sigmoid(m.rate_conv(x.mean(dim=(2, 3), keepdim=True))).flatten(1)
    mask = official_mask(x.shape, rate)
    spectrum = torch.roll(torch.fft.fft2(x, norm="forward"), shifts=(h // 2, w // 2), dims=(2, 3))

    def back(s):
        return torch.fft.ifft2(torch.roll(s, shifts=(-(h // 2), -(w // 2)), dims=(2, 3)), norm="forward").abs()

    assert mask.sum() > 0
    torch.testing.assert_close(high, back(spectrum * (1 - mask)), rtol=0, atol=0)
    torch.testing.assert_close(low, back(spectrum * mask), rtol=0, atol=0)


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

