"""pyairir.nn.output_conv (csrc/cpu/output_conv.cpp): a 3x3 convolution to a few channels plus the image it
restores, for CPU inference, against float64; its use in NAFNet; named errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import pyairir
from pyairir.nn import output_conv


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("cin,cout,shape", [(32, 3, (9, 13)), (40, 3, (7, 6)), (64, 4, (5, 11)), (7, 1, (3, 2)),
                                            (32, 2, (1, 1)), (48, 3, (1, 9))],
                         ids=["32-3", "40-3-tail", "64-4", "7-1", "32-2-1x1", "48-3-one-row"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_equals_conv_and_add_in_float64(cin, cout, shape, bias, threads):
    """Two images, residual in NCHW (a model's input) and the interior's four-pixel runs as well as the border
    (13 and 11 pixels wide: runs of four and single pixels left over)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    x = channels_last(torch.randn(2, cin, *shape))
    residual = torch.randn(2, cout, *shape)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            assert output_conv.usable(conv, x, residual)
            out = output_conv.conv(conv, x, residual)
    finally:
        torch.set_num_threads(before)
    want = F.conv2d(x.double(), conv.weight.double(), None if conv.bias is None else conv.bias.double(), padding=1)
    want = want + residual.double()
    assert out.shape == want.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6 * cin ** 0.5)


def test_usable_only_for_a_few_outputs_of_a_3x3_convolution_in_inference():
    x = channels_last(torch.randn(1, 32, 8, 8))
    residual = torch.randn(1, 3, 8, 8)
    conv = nn.Conv2d(32, 3, 3, padding=1)
    with torch.no_grad():
        assert output_conv.usable(conv, x, residual)
        assert not output_conv.usable(nn.Conv2d(32, 5, 3, padding=1), x, torch.randn(1, 5, 8, 8))
        assert not output_conv.usable(nn.Conv2d(32, 3, 5, padding=2), x, residual)
        assert not output_conv.usable(nn.Conv2d(32, 3, 3, padding=1, stride=2), x, residual)
        assert not output_conv.usable(nn.Conv2d(32, 3, 3, padding=1, padding_mode="reflect"), x, residual)
        assert not output_conv.usable(conv, x.contiguous(), residual)
        assert not output_conv.usable(conv, x, residual.double())
        assert not output_conv.usable(conv, x, residual[:, :, :7])
    assert not output_conv.usable(conv, x, residual)  # autograd on


def test_bad_arguments_are_named():
    op = torch.ops.pyairir_cpu.output_conv
    x = channels_last(torch.randn(1, 8, 4, 5))
    weight, bias, residual = torch.randn(3, 8, 3, 3), torch.randn(3), torch.randn(1, 3, 4, 5)
    with pytest.raises(RuntimeError, match="output_conv: x must be a float32 CPU tensor, got Double"):
        op(x.double(), weight, bias, residual)
    with pytest.raises(RuntimeError, match="output_conv: x must be a non-empty 4-D .* dense in channels_last"):
        op(x.contiguous(), weight, bias, residual)
    with pytest.raises(RuntimeError, match="output_conv: x must be a non-empty 4-D"):
        op(x[:0], weight, bias, residual)
    with pytest.raises(RuntimeError, match="output_conv: weight must be a contiguous float32 \\(O, 8, 3, 3\\) tensor "
                                           "with 1 <= O <= 4, got Float \\[5, 8, 3, 3\\]"):
        op(x, torch.randn(5, 8, 3, 3), torch.randn(5), torch.randn(1, 5, 4, 5))
    with pytest.raises(RuntimeError, match="output_conv: bias must be a contiguous float32 \\(3,\\) tensor"):
        op(x, weight, torch.randn(4), residual)
    with pytest.raises(RuntimeError, match="output_conv: residual must be a float32 \\(1, 3, 4, 5\\) tensor"):
        op(x, weight, bias, residual[..., :4])


class CountOutputConv(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += str(func.overloadpacket) == "pyairir_cpu.output_conv"
        return func(*args, **(kwargs or {}))


def test_nafnet_ends_with_it():
    """Fast NAFNet's `ending` and the input image's add are one output_conv, equal to the eager model."""
    torch.manual_seed(0)
    fast = pyairir.models.nafnet.NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]).eval()
    eager = pyairir.models.nafnet.NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]).eval()
    with torch.no_grad():
        for p in fast.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    eager.load_state_dict(fast.state_dict())
    pyairir.nn.set_fast(fast)
    x = torch.rand(1, 3, 13, 10)
    with torch.no_grad(), CountOutputConv() as counter:
        out = fast(x)
    assert counter.calls == 1
    with torch.no_grad():
        torch.testing.assert_close(out, eager(x), rtol=1e-5, atol=1e-5)
