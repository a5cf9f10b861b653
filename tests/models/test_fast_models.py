"""The fast backbones are the eager ones: same outputs and gradients, same training curves, and
the same bf16 behaviour (tests/test_compile.py: they compile with fullgraph=True)."""

from __future__ import annotations

import pytest
import torch

import pyairir
from tests.models.test_models import TINY


def pair(name: str):
    """The same tiny model twice, the second fast (fused kernels, channels_last)."""
    torch.manual_seed(0)
    eager = pyairir.create_model(name, **TINY[name]).double()
    with torch.no_grad():
        for p in eager.parameters():  # NAFNet's beta/gamma start at zero: make every path count
            p.add_(0.05 * torch.randn_like(p))
    fast = pyairir.create_model(name, fast=True, **TINY[name]).double()
    fast.load_state_dict(eager.state_dict())
    return eager, fast


@pytest.mark.parametrize("name", ["restormer", "promptir", "adair", "nafnet_sidd_w32", "nafnet_gopro_w32"])
def test_fast_model_equals_eager_float64(name):
    eager, fast = pair(name)
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    ye, yf = eager(x), fast(x)
    torch.testing.assert_close(yf, ye, atol=1e-9 * ye.abs().max().item(), rtol=1e-9)
    ye.square().mean().backward()
    yf.square().mean().backward()
    for (key, a), (_, b) in zip(eager.named_parameters(), fast.named_parameters()):
        if a.grad is None:
            assert b.grad is None, key
            continue
        torch.testing.assert_close(b.grad, a.grad, atol=1e-9 * max(a.grad.abs().max().item(), 1e-30), rtol=1e-9,
                                   msg=key)


@pytest.mark.parametrize("name", ["restormer", "nafnet_sidd_w32"])
def test_training_curves_agree(name):
    """A few AdamW steps in float32 on a fixed batch: the loss falls and the two curves agree."""
    eager, fast = (m.float() for m in pair(name))
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 32, 32, generator=generator)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=generator)
    curves = []
    for model in (eager, fast):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        losses = []
        for _ in range(6):
            optimizer.zero_grad()
            loss = (model(noisy) - clean).abs().mean()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        curves.append(losses)
    assert curves[0][-1] < curves[0][0]
    for a, b in zip(*curves):
        assert abs(a - b) <= 1e-4 * abs(a), curves


def bfloat16_error(model, x, reference, autocast):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(x if autocast else x.bfloat16())
    return (out.float() - reference).abs().max().item()


@pytest.mark.parametrize("name", ["restormer", "promptir", "adair", "nafnet_sidd_w32"])
def test_bfloat16_paths(name):
    """The fast model in bf16 (weights cast, or fp32 weights under torch.autocast) errs against the
    fp32 model by at most twice what the eager model does in the same mode (plus a bf16 ulp).
    AdaIR's band split runs in float32, as the official FFT must (torch has none in bf16 on the CPU)."""
    eager, fast = (m.float() for m in pair(name))
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = eager(x)
    ulp = reference.abs().max().item() * 2 ** -8
    for_autocast = bfloat16_error(fast, x, reference, autocast=True), bfloat16_error(eager, x, reference, True)
    assert for_autocast[0] <= 2 * for_autocast[1] + ulp, for_autocast
    cast = bfloat16_error(pyairir.nn.set_fast(fast.bfloat16()), x, reference, autocast=False)
    eager_cast = bfloat16_error(eager.bfloat16(), x, reference, autocast=False)
    assert cast <= 2 * eager_cast + ulp, (cast, eager_cast)


@pytest.mark.parametrize("name", ["restormer", "promptir", "adair", "nafnet_sidd_w32"])
def test_fast_model_runs_under_inference_mode(name):
    """What users write for inference: torch.inference_mode gives the no_grad output."""
    _, fast = pair(name)
    x = torch.rand(1, 3, 40, 72, dtype=torch.float64)
    with torch.no_grad():
        expected = fast(x)
    with torch.inference_mode():
        got = fast(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
