"""pyairir.nn.prepacked: a convolution with its weight reordered once for oneDNN equals F.conv2d
(1x1, 3x3, strided, dilated, depthwise; a bf16 weight on a float32 input), follows every change of
its weight, bias, scale and input shape, and stays out of the way of autograd and of layouts oneDNN
does not take."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pyairir.nn import NAFBlock, pointwise, prepacked, set_fast

pytestmark = pytest.mark.skipif(not prepacked.available(), reason="this torch has no oneDNN")


def conv_and_input(cin=32, cout=48, bias=True, shape=(2, 9, 7), seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 1, bias=bias)
    x = torch.randn(shape[0], cin, *shape[1:]).contiguous(memory_format=torch.channels_last)
    return conv, x


def expected(conv, x, scale=None):
    weight, bias = conv.weight, conv.bias
    if scale is not None:
        weight = scale.reshape(-1, 1, 1, 1) * weight
        bias = None if bias is None else scale.reshape(-1) * bias
    return F.conv2d(x, weight, bias)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("scaled", [False, True], ids=["plain", "scaled"])
def test_equals_conv2d_and_is_made_once(bias, scaled):
    conv, x = conv_and_input(bias=bias)
    scale = torch.randn(1, 48, 1, 1) if scaled else None
    with torch.no_grad():
        out = prepacked.conv(conv, x, scale)
        packed = prepacked._PACKED[conv][1]
        again = prepacked.conv(conv, x, scale)
        torch.testing.assert_close(out, expected(conv, x, scale), rtol=1e-6, atol=1e-6)
    assert torch.equal(again, out) and prepacked._PACKED[conv][1] is packed
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("change", ["weight in place", "bias in place", "scale in place", "load_state_dict",
                                    "input shape", "new parameter", "new data", "to double and back"])
def test_follows_every_change(change):
    """What the reordered weight was made from changes: the next call uses the new values."""
    conv, x = conv_and_input()
    scale = torch.randn(1, 48, 1, 1)
    with torch.no_grad():
        prepacked.conv(conv, x, scale)
        if change == "weight in place":
            conv.weight.mul_(-2)
        elif change == "bias in place":
            conv.bias.add_(1)
        elif change == "scale in place":
            scale.mul_(3)
        elif change == "load_state_dict":
            conv.load_state_dict(nn.Conv2d(32, 48, 1).state_dict())
        elif change == "new parameter":  # the old weight freed: its storage may come back for the new one
            conv.weight = nn.Parameter(torch.randn_like(conv.weight))
        elif change == "new data":
            conv.weight.data = torch.randn_like(conv.weight)
        elif change == "to double and back":
            conv.double().float()
        else:
            x = torch.randn(1, 32, 5, 11).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(prepacked.conv(conv, x, scale), expected(conv, x, scale), rtol=1e-6, atol=1e-6)


def test_autograd_and_nchw_take_the_plain_convolution():
    conv, x = conv_and_input()
    scale = torch.randn(1, 48, 1, 1, requires_grad=True)
    out = prepacked.conv(conv, x, scale)
    out.sum().backward()
    assert conv.weight.grad is not None and scale.grad is not None
    with torch.no_grad():
        nchw = x.contiguous()
        torch.testing.assert_close(prepacked.conv(conv, nchw), conv(nchw))
    assert conv not in prepacked._PACKED


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(9, 7), (3, 4)], ids=["63px", "12px"])  # 12 pixels < 16 outputs: SCA scales x
def test_nafblock_inference(size, dtype):
    """NAFBlock's fast inference path (in float32 its four 1x1 convolutions fused GEMMs, pyairir.nn.pointwise;
    in float64 prepacking steps aside; SCA's pool as a matrix-vector product) against the eager block, for
    two images."""
    torch.manual_seed(0)
    eager = NAFBlock(16).to(dtype)
    with torch.no_grad():
        for p in eager.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast = set_fast(NAFBlock(16).to(dtype))
    fast.load_state_dict(eager.state_dict())
    x = torch.randn(2, 16, *size, dtype=dtype).contiguous(memory_format=torch.channels_last)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    with torch.no_grad():
        torch.testing.assert_close(fast(x), eager(x), rtol=tolerance, atol=tolerance)
    if dtype == torch.float32:
        assert fast in pointwise._PLANS  # the block's packed weights, made once


@pytest.mark.parametrize("geometry", [dict(kernel_size=3, padding=1), dict(kernel_size=3, padding=2, dilation=2),
                                      dict(kernel_size=3, padding=1, stride=2), dict(kernel_size=5, padding=(2, 1)),
                                      dict(kernel_size=3, padding=1, groups=32)],
                         ids=["3x3", "dilated", "strided", "5x5-uneven-padding", "depthwise"])
def test_any_geometry(geometry):
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 32, **geometry)
    x = torch.randn(2, 32, 9, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = prepacked.conv(conv, x)
        assert conv in prepacked._PACKED
        torch.testing.assert_close(out, conv(x), rtol=1e-5, atol=1e-5)


def test_bf16_weight_on_float32_input():
    """A bf16 model's convolution computing in float32: the weight converted (exactly) when packed;
    with autograd on, F.conv2d on the converted weight. Both equal the float32 convolution of the
    bf16 values."""
    conv, x = conv_and_input()
    conv.bfloat16()
    exact = nn.Conv2d(32, 48, 1)
    exact.load_state_dict({k: v.float() for k, v in conv.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(prepacked.conv(conv, x), exact(x), rtol=1e-6, atol=1e-6)
    assert conv in prepacked._PACKED
    torch.testing.assert_close(prepacked.conv(conv, x), exact(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("padding", [dict(padding="same"), dict(padding=1, padding_mode="reflect")],
                         ids=["same", "reflect"])
def test_padding_it_cannot_pack_takes_the_module(padding):
    """Padding oneDNN's prepacked path does not take ('same', a non-zero mode): the module's own
    convolution, also for a bf16 weight on a float32 input."""
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 4, 3, **padding)
    x = torch.randn(1, 4, 6, 5).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(prepacked.conv(conv, x), conv(x), rtol=0, atol=0)
        expected = conv(x)
        conv.bfloat16()
        exact = [p.float() for p in (conv.weight, conv.bias)]
        torch.testing.assert_close(prepacked.conv(conv, x), conv._conv_forward(x, *exact), rtol=1e-6, atol=1e-6)
    assert conv not in prepacked._PACKED and expected.shape == x.shape
