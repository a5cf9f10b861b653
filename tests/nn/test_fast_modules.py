"""Every module computes the same function with fast=True and fast=False, in both layouts."""

from __future__ import annotations

import pytest
import torch

from pyairir.nn import GDFN, MDTA, LayerNorm, LayerNorm2d, NAFBlock, TransformerBlock, set_fast
from pyairir.nn.fast import residual

# name -> (factory, input channels)
MODULES = {
    "layernorm_withbias": (lambda: LayerNorm(40, "WithBias"), 40),
    "layernorm_biasfree": (lambda: LayerNorm(40, "BiasFree"), 40),
    "layernorm2d": (lambda: LayerNorm2d(40), 40),
    "mdta_heads2": (lambda: MDTA(96, 2, bias=False), 96),
    "mdta_heads4_bias": (lambda: MDTA(160, 4, bias=True), 160),
    "gdfn": (lambda: GDFN(48, 2.66, bias=False), 48),
    "nafblock": (lambda: NAFBlock(16), 16),
    "transformer_block": (lambda: TransformerBlock(80, 2, 2.66, False, "WithBias"), 80),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    module = MODULES[name][0]().double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


@pytest.mark.parametrize("batch", [1, 2])  # one image: NAFBlock folds SCA into conv3's weights
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_fast_equals_eager(name, channels_last, batch):
    eager, fast = build(name), set_fast(build(name), channels_last=channels_last)
    assert list(eager.state_dict()) == list(fast.state_dict())
    x = torch.randn(batch, MODULES[name][1], 7, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xe, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    ye, yf = eager(xe), fast(xf)
    tolerance = 1e-9 * ye.abs().max().item()
    torch.testing.assert_close(yf, ye, atol=tolerance, rtol=1e-9)
    grad = torch.randn_like(ye)
    ye.backward(grad)
    yf.backward(grad)
    torch.testing.assert_close(xf.grad, xe.grad, atol=1e-9 * xe.grad.abs().max().item(), rtol=1e-9)
    for (key, a), (_, b) in zip(eager.named_parameters(), fast.named_parameters()):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-9 * max(a.grad.abs().max().item(), 1e-30), rtol=1e-9,
                                   msg=key)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", sorted(MODULES))
def test_fast_inference_equals_eager(name, channels_last):
    """Without autograd the fast modules take other paths (MDTA hands qkv_dwconv to the mdta op,
    which fuses it for channels_last operands): the same values."""
    eager, fast = build(name), set_fast(build(name), channels_last=channels_last)
    x = torch.randn(2, MODULES[name][1], 7, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ye, yf = eager(x), fast(x)
    torch.testing.assert_close(yf, ye, atol=1e-9 * ye.abs().max().item(), rtol=1e-9)


def test_set_fast_keeps_parameters_and_flips_back():
    module = build("transformer_block")
    parameters = [id(p) for p in module.parameters()]
    set_fast(module)
    assert module.attn.fast and module.ffn.fast and module.norm1.body.fast
    assert module.attn.qkv_dwconv.weight.is_contiguous(memory_format=torch.channels_last)
    set_fast(module, False)
    assert not module.attn.fast and module.attn.qkv_dwconv.weight.is_contiguous()
    assert [id(p) for p in module.parameters()] == parameters


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("name", ["gdfn", "mdta_heads2", "transformer_block"])
def test_inference_in_bands_equals_whole_image(monkeypatch, name, channels_last):
    """Without autograd, GDFN and MDTA run a large image's wide projections (with TransformerBlock's
    norms) in bands of rows, each with one row of context: the same values as one whole pass."""
    from pyairir.nn import banded

    monkeypatch.setattr(banded, "BAND_PIXELS", 4 * 9)  # bands of 4 rows of a 9-pixel-wide image
    fast = set_fast(build(name), channels_last=channels_last)
    x = torch.randn(2, MODULES[name][1], 19, 9, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    projection = {"gdfn": lambda m: m.project_in, "mdta_heads2": lambda m: m.qkv,
                  "transformer_block": lambda m: m.attn.qkv}[name](fast)
    calls = []
    projection.register_forward_hook(lambda *_: calls.append(1))
    whole = fast(x)  # autograd on: one pass
    assert len(calls) == 1
    with torch.no_grad():
        banded_out = fast(x)
    assert len(calls) == 1 + 5  # 19 rows in bands of 4
    torch.testing.assert_close(banded_out, whole, atol=1e-12, rtol=1e-12)


def test_residual_adds_in_place_only_into_a_fresh_output():
    """pyairir.nn.fast.residual: in fast inference x + y is written into y (x untouched); with
    autograd, without fast, on another layout, or where y is x itself, a new tensor."""
    x = torch.randn(1, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    y = torch.randn(1, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    expected, before = x + y, x.clone()
    with torch.no_grad():
        out = residual(x, y.clone(), fast=True)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert torch.equal(x, before)
        fresh = y.clone()
        assert residual(x, fresh, fast=True) is fresh
        for other in (residual(x, y, fast=False), residual(x, y.contiguous(), fast=True), residual(x, x, fast=True)):
            assert other is not y and other is not x
        assert torch.equal(x, before) and torch.equal(residual(x, x, fast=True), 2 * before)
    assert residual(x, y, fast=True) is not y
