"""Each paradigm gives the same outputs and gradients with its fused kernels (fast=True) as with
the eager modules (float64, relative error <= 1e-9): SIPL's proxy_attention, CPL's and PromptIR's
topk_prompt, LUPI's film_gelu."""

from __future__ import annotations

import copy

import pytest
import torch

from pyairir.nn import set_fast
from pyairir.nn.vgg import VGGFeatures
from pyairir.paradigms import CPL, LUPI, SIPL
from tests.paradigms.common import backbone, batch

RELATIVE = 1e-9


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """model in float64 with every parameter moved off its initial value (SIPL's dictionaries
    start at zero, LUPI's block convs too), so that every path carries signal."""
    generator = torch.Generator().manual_seed(0)
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def build(paradigm: str) -> torch.nn.Module:
    if paradigm == "sipl":
        return SIPL(backbone("promptir"))
    if paradigm == "cpl":
        return CPL(backbone("promptir"), top_k=2, vgg=VGGFeatures(random=True), negatives=2)
    model = LUPI(backbone("promptir"), prior_dim=32, estimator_width=8)
    model.begin_stage2()
    return model


def outputs_and_gradients(model: torch.nn.Module, fast: bool) -> dict[str, torch.Tensor]:
    model = set_fast(copy.deepcopy(model), fast)
    degraded, clean = (t.double() for t in batch(size=24))
    model.eval()
    with torch.no_grad():
        results = {"output": model(degraded)}
        if isinstance(model, SIPL):
            results["refined"] = model.restore(degraded, iterations=1)[1]
    model.train()
    torch.manual_seed(1)  # CPL's negatives, SIPL's and LUPI's randomness
    model.zero_grad()
    model.training_loss(degraded, clean)["loss"].backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            results[f"grad:{name}"] = p.grad.clone()
    return results


@pytest.mark.parametrize("paradigm", ["sipl", "cpl", "lupi"])
def test_fast_equals_eager(paradigm):
    model = perturbed(build(paradigm))
    fast, eager = outputs_and_gradients(model, True), outputs_and_gradients(model, False)
    assert fast.keys() == eager.keys() and len(fast) > 10
    for key, expected in eager.items():
        scale = expected.abs().max().item()
        error = (fast[key] - expected).abs().max().item()
        assert error <= RELATIVE * max(scale, 1e-30), f"{key}: error {error:.3g} vs scale {scale:.3g}"


def test_fast_modules_run_the_kernels(monkeypatch):
    """With fast=True the paradigms' modules call the ops (and not the eager references)."""
    calls = []
    from pyairir import ops

    for name in ("proxy_attention", "topk_prompt", "film_gelu"):
        original = getattr(ops, name)
        monkeypatch.setattr(ops, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    degraded, _ = batch(size=24)
    for paradigm in ("sipl", "cpl", "lupi"):
        with torch.no_grad():
            model = set_fast(build(paradigm).eval())
            model(degraded)
            if paradigm == "sipl":
                model.restore(degraded, iterations=1)
    assert {"proxy_attention", "topk_prompt", "film_gelu"} <= set(calls)
