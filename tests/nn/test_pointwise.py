"""pyairir.nn.pointwise (csrc/cpu/pointwise_conv.cpp): a 1x1 convolution with a LayerNorm before it and a
SimpleGate, scales and a residual add after it, in one GEMM, equals that sequence computed in float64
(odd channel counts, pixel counts that are no multiple of the micro-kernel's rows, one or two threads,
batches with a scale per image); follows every change of what its packed weight was made from; rejects
bad arguments by name; and NAFNet's block runs on it in fast inference, equal to the unfused block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pyairir.nn import LayerNorm2d, LocalAvgPool2d, NAFBlock, pointwise

pytestmark = pytest.mark.skipif(not pointwise.available(), reason="pyairir._C is not built")


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def expected(conv, x, norm=None, gate=False, out_scale=None, in_scale=None, residual=None):
    """The sequence the fused GEMM replaces, in float64."""
    x = x.double()
    if norm is not None:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / (var + norm.eps).sqrt() * norm.weight.double()[:, None, None] + norm.bias.double()[:, None, None]
    if in_scale is not None:
        x = x * in_scale.double()[:, :, None, None]
    y = F.conv2d(x, conv.weight.double(), None if conv.bias is None else conv.bias.double())
    if out_scale is not None:
        y = y * out_scale.double()
    if gate:
        a, b = y.chunk(2, dim=1)
        y = a * b
    return y if residual is None else y + residual.double()


def case(cin, cout, shape, batch=1, bias=True, gate=False, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, 1, bias=bias)
    norm = LayerNorm2d(cin)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_(0, 0.3)
    x = channels_last(torch.randn(batch, cin, *shape) * 2 + 0.5)
    residual = channels_last(torch.randn(batch, cout // 2 if gate else cout, *shape))
    return conv, norm, x, residual


@pytest.mark.parametrize("cin,cout,shape", [(40, 80, (5, 7)), (48, 96, (13, 11)), (80, 37, (3, 3)),
                                            (176, 352, (9, 6)), (3, 5, (1, 1))],
                         ids=["40-80-5x7", "48-96-13x11", "80-37-3x3", "176-352-9x6", "3-5-1x1"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("parts", ["plain", "norm", "norm+gate", "scales+residual", "norm+out_scale+residual", "no bias"])
def test_equals_the_sequence_in_float64(cin, cout, shape, threads, parts):
    gate = parts.endswith("gate")
    if gate and cout % 2:
        cout += 1
    conv, norm, x, residual = case(cin, cout, shape, batch=2, bias=parts != "no bias", gate=gate)
    kwargs = {}
    if "norm" in parts:
        kwargs["norm"] = norm
    if gate:
        kwargs["gate"] = True
    if parts.endswith("residual"):
        kwargs.update(out_scale=torch.randn(1, cout, 1, 1), residual=residual)
    if parts == "scales+residual":
        kwargs["in_scale"] = torch.rand(2, cin) + 0.5
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            out = pointwise.conv(conv, x, **kwargs)
    finally:
        torch.set_num_threads(before)
    want = expected(conv, x, **kwargs)
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    assert out.shape == want.shape
    # float32 products summed over cin terms of magnitude ~1: a few ulp times sqrt(cin)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6 * cin ** 0.5)


def test_large_image_many_tasks():
    """More rows than one task holds (tasks of at most 128 KB of x), with normalisation per task."""
    conv, norm, x, residual = case(32, 64, (67, 45), gate=True)
    with torch.no_grad():
        out = pointwise.conv(conv, x, norm=norm, gate=True, residual=residual)
    torch.testing.assert_close(out.double(), expected(conv, x, norm, True, residual=residual), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("change", ["weight in place", "norm weight in place", "out_scale in place",
                                    "load_state_dict", "gate"])
def test_follows_every_change(change):
    conv, norm, x, _ = case(16, 32, (4, 5))
    scale = torch.randn(1, 32, 1, 1)
    kwargs = {"norm": norm, "out_scale": scale}
    with torch.no_grad():
        pointwise.conv(conv, x, **kwargs)
        if change == "weight in place":
            conv.weight.mul_(-2)
        elif change == "norm weight in place":
            norm.weight.add_(1)
        elif change == "out_scale in place":
            scale.mul_(3)
        elif change == "load_state_dict":
            conv.load_state_dict({k: torch.randn_like(v) for k, v in conv.state_dict().items()})
        else:
            kwargs = {"norm": norm, "gate": True}
        out = pointwise.conv(conv, x, **kwargs)
    torch.testing.assert_close(out.double(), expected(conv, x, **kwargs), rtol=1e-5, atol=1e-5)


def test_bad_arguments_are_named():
    conv, norm, x, residual = case(8, 16, (3, 4))
    packed, bias = torch.ops.pyairir_cpu.pack_pointwise(conv.weight.detach().flatten(1), conv.bias.detach(), False, 1)
    op = torch.ops.pyairir_cpu.pointwise_conv
    with pytest.raises(RuntimeError, match="x must be dense in channels_last"):
        op(x.contiguous(), packed, bias, 16, False, False, 0.0, 1, None, None)
    with pytest.raises(RuntimeError, match="x must be float32, got Double"):
        op(x.double(), packed, bias, 16, False, False, 0.0, 1, None, None)
    with pytest.raises(RuntimeError, match="x must be a non-empty 4-D"):
        op(x[:0], packed, bias, 16, False, False, 0.0, 1, None, None)
    with pytest.raises(RuntimeError, match="packed_weight must be pack_pointwise's"):
        op(channels_last(torch.randn(1, 9, 3, 4)), packed, bias, 16, False, False, 0.0, 1, None, None)
    with pytest.raises(RuntimeError, match="residual must have shape \\[1, 16, 3, 4\\]"):
        op(x, packed, bias, 16, False, False, 0.0, 1, None, residual[:, :8])
    with pytest.raises(RuntimeError, match="in_scale must be a contiguous \\(1, 8\\)"):
        op(x, packed, bias, 16, False, False, 0.0, 1, torch.ones(1, 7), None)
    with pytest.raises(RuntimeError, match="upscale must be >= 1, and 1 with gate or in_scale, got 2"):
        op(x, packed, bias, 4, False, False, 0.0, 2, torch.ones(1, 8), None)
    with pytest.raises(RuntimeError, match="even number of output channels"):
        torch.ops.pyairir_cpu.pack_pointwise(torch.randn(5, 8), None, True, 1)
    block = NAFBlock(8).eval()
    with torch.no_grad():
        t, mean = pointwise.nafblock_head(block, x)
        with pytest.raises(RuntimeError, match="nafblock_head: inp must be float32, got Double"):
            pointwise.nafblock_head(block, x.double())
        with pytest.raises(RuntimeError, match="nafblock_tail: inp must be dense in channels_last"):
            pointwise.nafblock_tail(block, t, mean, x.contiguous())
        attention = (torch.zeros(8, 8), torch.zeros(8))
        w3_w4 = (*pointwise.packed_weight(block.conv3, out_scale=block.beta),
                 *pointwise.packed_weight(block.conv4, norm=block.norm2, gate=True))
        w5 = pointwise.packed_weight(block.conv5, out_scale=block.gamma)
        tail = torch.ops.pyairir_cpu.nafblock_tail
        with pytest.raises(RuntimeError, match="nafblock_tail: w5 must be pack_pointwise's"):
            tail(t, mean, x, *attention, *w3_w4, torch.zeros(8), torch.zeros(1, 2 * 16), 1e-6)
        with pytest.raises(RuntimeError, match="nafblock_tail: mean must be a contiguous \\(1, 8\\) tensor"):
            tail(t, mean[:, :7], x, *attention, *w3_w4, *w5, 1e-6)
        with pytest.raises(RuntimeError, match="nafblock_tail: attention_weight and attention_bias must be"):
            tail(t, mean, x, torch.zeros(8, 7), torch.zeros(8), *w3_w4, *w5, 1e-6)
        with pytest.raises(RuntimeError, match="nafblock_tail: attention_bias must be float32, got Double"):
            tail(t, mean, x, torch.zeros(8, 8), torch.zeros(8).double(), *w3_w4, *w5, 1e-6)
    with pytest.raises(ValueError, match="module must be a 1x1 convolution"):
        pointwise.conv(nn.Conv2d(8, 16, 3, padding=1), x)
    with pytest.raises(ValueError, match="in_scale cannot follow the norm"):
        pointwise.conv(conv, x, norm=norm, in_scale=torch.ones(1, 8))
    with pytest.raises(ValueError, match="out_scale cannot be folded through the gate"):
        pointwise.conv(conv, x, gate=True, out_scale=torch.ones(1, 16, 1, 1))


def test_usable_only_for_float32_channels_last_inference():
    x = channels_last(torch.randn(1, 8, 4, 4))
    with torch.no_grad():
        assert pointwise.usable(x)
        assert not pointwise.usable(x.contiguous())
        assert not pointwise.usable(x.double())
        assert not pointwise.usable(x[:0])
    assert not pointwise.usable(x)  # autograd on
    from pyairir import runtime
    try:
        for float32_for_bf16 in (False, True):
            runtime.set_float32_for_bf16(float32_for_bf16)
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                assert pointwise.usable(x) == float32_for_bf16
    finally:
        runtime.set_float32_for_bf16(None)


class CountFused(TorchDispatchMode):
    """Counts the calls of the fused GEMMs by name."""

    def __init__(self):
        super().__init__()
        self.calls = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        namespace, name = str(func.overloadpacket).split(".")
        if namespace == "pyairir_cpu" and name != "pack_pointwise":
            self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("c,batch,shape", [(40, 1, (7, 5)), (48, 2, (13, 9)), (16, 1, (2, 3)), (16, 2, (40, 41)),
                                            (16, 2, (66, 5))])
@pytest.mark.parametrize("pool", ["global", "local"])
def test_nafblock_fused_equals_the_block(c, batch, shape, pool):
    """NAFBlock in fast inference on a float32 channels_last image runs its four 1x1 convolutions fused
    (with the global pool, the block in two passes: nafblock_head, nafblock_tail with SCA's conv; with
    NAFNetLocal's local pool, one by one), equal to the block's reference path (non-zero beta and gamma,
    so both residual branches count). 40x41 pixels make several tasks per image."""
    torch.manual_seed(1)
    block = NAFBlock(c).eval()
    if pool == "local":
        block.sca[0] = LocalAvgPool2d((3, 4))
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = channels_last(torch.randn(batch, c, *shape))
    with torch.no_grad():
        want = block(x)
        block.fast = True
        with CountFused() as counter:
            got = block(x)
    assert counter.calls == ({"nafblock_head": 1, "nafblock_tail": 1} if pool == "global" else {"pointwise_conv": 4})
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change", ["conv1.weight", "conv2.bias", "sca.1.weight", "norm2.bias", "beta", "gamma",
                                    "conv5.weight replaced", "conv2.weight replaced", "sca.1.bias replaced",
                                    "norm1.eps"])
def test_nafblock_follows_every_change(change):
    """The block's plan (pointwise._plan: packed weights, filter, SCA's conv) is made again when any tensor
    it is made from changes in place or is replaced, or a norm's eps changes."""
    torch.manual_seed(4)
    block = NAFBlock(16).eval()
    x = channels_last(torch.randn(1, 16, 6, 7))
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.2)
        block.fast = True
        block(x)
        if change.endswith(" replaced"):
            module_name, _, name = change.removesuffix(" replaced").rpartition(".")
            module = block.get_submodule(module_name)
            setattr(module, name, nn.Parameter(torch.randn_like(getattr(module, name))))
        elif change == "norm1.eps":
            block.norm1.eps = 0.5
        else:
            block.get_parameter(change).mul_(-3)
        got = block(x)
        block.fast = False
        torch.testing.assert_close(got, block(x), rtol=1e-5, atol=1e-5)


def test_nafblock_with_dropout_in_training_is_not_fused():
    block = NAFBlock(8, drop_out_rate=0.5, fast=True).train()
    with torch.no_grad(), CountFused() as counter:
        block(channels_last(torch.randn(1, 8, 4, 4)))
    assert counter.calls == {}
    block.eval()
    with torch.no_grad(), CountFused() as counter:
        block(channels_last(torch.randn(1, 8, 4, 4)))
    assert counter.calls == {"nafblock_head": 1, "nafblock_tail": 1}


@pytest.mark.parametrize("cin,cout,shape", [(64, 128, (5, 7)), (40, 4 * 37, (3, 4)), (16, 36, (1, 2))],
                         ids=["64-128-5x7", "40-148-3x4", "16-36-1x2"])
@pytest.mark.parametrize("batch", [1, 2])
def test_upscale_equals_pixel_shuffle_and_add(cin, cout, shape, batch):
    """An upsampling layer (1x1 convolution, PixelShuffle) and the skip connection added after it, as NAFNet's
    decoder has them: the shuffle in the GEMM's stores (3 of 37 channels per vector left over, too)."""
    upscale = 2 if cout % 9 else 3
    conv, _, x, _ = case(cin, cout, shape, batch=batch, bias=False)
    skip = channels_last(torch.randn(batch, cout // upscale ** 2, shape[0] * upscale, shape[1] * upscale))
    with torch.no_grad():
        out = pointwise.conv(conv, x, upscale=upscale, residual=skip)
    want = F.pixel_shuffle(expected(conv, x), upscale) + skip.double()
    assert out.shape == want.shape and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=2e-6 * cin ** 0.5)


@pytest.mark.parametrize("c,shape", [(16, (67, 9)), (40, (70, 11)), (64, (140, 60)), (48, (5, 7)), (80, (1, 3))],
                         ids=["16-67x9", "40-70x11", "64-140x60-chunks", "48-5x7", "80-1x3"])
@pytest.mark.parametrize("threads", [1, 2])
def test_nafblock_head_equals_the_sequence(c, shape, threads):
    """nafblock_head: SimpleGate(conv2(conv1(norm1(x)))) and its channel means against float64, two images.
    Most images are one GEMM then the filter (conv1's outputs for the whole image within 4 MB); 64 channels
    of 140x60 pixels are over it: each thread's band of rows in chunks of 31 rows, rows carried over from
    chunk to chunk."""
    torch.manual_seed(2)
    block = NAFBlock(c).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = channels_last(torch.randn(2, c, *shape) + 0.3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            t, mean = pointwise.nafblock_head(block, x)
    finally:
        torch.set_num_threads(before)
    u = expected(block.conv1, x, norm=block.norm1)
    u = F.conv2d(u, block.conv2.weight.double(), block.conv2.bias.double(), padding=1, groups=2 * c)
    want = u[:, :c] * u[:, c:]
    assert t.shape == want.shape and t.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(t.double(), want, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(mean.double(), want.mean((2, 3)), rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("shape", [(70, 13), (150, 150)], ids=["whole-image", "bands"])
def test_the_same_for_any_number_of_threads(shape):
    """Every output element is summed in one order whatever the tasks (the head's means row by row, SCA's
    conv per channel): bitwise equal on 1, 2 and 3 threads, with the head's GEMM over the whole image and
    (150x150 pixels) in bands of rows."""
    torch.manual_seed(3)
    block = NAFBlock(24).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = channels_last(torch.randn(2, 24, *shape))
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with torch.no_grad():
                t, mean = pointwise.nafblock_head(block, x)
                tail = pointwise.nafblock_tail(block, t, mean, x)
                up = pointwise.conv(block.conv4, x, upscale=2,
                                    residual=channels_last(torch.ones(2, 12, 2 * shape[0], 2 * shape[1])))
            results.append((t, mean, tail, up))
    finally:
        torch.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
