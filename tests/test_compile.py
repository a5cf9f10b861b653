"""torch.compile(fullgraph=True) traces every fast backbone and paradigm without a graph break
(the ops' fake kernels and registered autograd), forward and backward, and the compiled model
computes what the uncompiled one does."""

from __future__ import annotations

import pytest
import torch

import pyairir
from pyairir.nn import set_fast
from pyairir.paradigms import CPL, LUPI, SIPL
from tests.models.test_models import TINY
from tests.paradigms.common import backbone


def fast_backbone(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return pyairir.create_model(name, fast=True, **TINY[name])


def sipl() -> tuple[torch.nn.Module, tuple]:
    model = set_fast(SIPL(backbone("promptir")))
    with torch.no_grad():  # the dictionaries start at zero: give the fusion something to do
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    privileged = model.privileged_features(torch.rand(1, 3, 16, 16), restore=False)
    return model, (privileged,)


def lupi() -> tuple[torch.nn.Module, tuple]:
    model = set_fast(LUPI(backbone("restormer"), prior_dim=32, estimator_width=8))
    model.begin_stage2()
    return model, ()


MODELS = {
    "restormer": lambda: (fast_backbone("restormer"), ()),
    "promptir": lambda: (fast_backbone("promptir"), ()),
    "adair": lambda: (fast_backbone("adair"), ()),
    "nafnet_sidd_w32": lambda: (fast_backbone("nafnet_sidd_w32"), ()),
    "sipl": sipl,
    "cpl": lambda: (set_fast(CPL(backbone("promptir"))), ()),
    "lupi": lupi,
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fullgraph_compile(name):
    torch._dynamo.reset()
    model, extra = MODELS[name]()
    model.eval()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, *extra), model(x, *extra), atol=1e-5, rtol=1e-5)
    x.requires_grad_()
    compiled(x, *extra).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
