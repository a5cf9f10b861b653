"""Whole backbones on one 3x256x256 image (batch 1): the official eager computation, pyairir's
fast model, and torch.compile of the eager model, in fp32 and bf16; and a training step."""

from __future__ import annotations

import pytest
import torch

import pyairir
from benchmarks.conftest import record_compile_time

SIZE = 256
VARIANTS = ["eager fp32", "fast fp32", "compile fp32", "eager bf16 autocast", "compile bf16 autocast", "fast bf16"]


def model(name: str, fast: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return pyairir.create_model(name, fast=fast).eval()


def inference(name: str, variant: str):
    """The callable to time for `variant` of model `name`, with compilation (if any) done."""
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    group = f"{name} inference"
    if variant.startswith("fast"):
        net = model(name, fast=True)
        if variant.endswith("bf16"):
            net = pyairir.nn.set_fast(net.to(torch.bfloat16))
            x = x.to(torch.bfloat16)
        return lambda: net(x)
    net = model(name)
    autocast = variant.endswith("autocast")
    if variant.startswith("compile"):
        torch._dynamo.reset()
        net = torch.compile(net)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return net(x)

    if variant.startswith("compile"):
        with torch.no_grad():
            record_compile_time(group, variant, run)
    return run


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["promptir", "restormer"])
def test_inference(measure, name, variant):
    fn = inference(name, variant)
    with torch.no_grad():
        measure(f"{name} inference", variant, fn, rounds=5)


@pytest.mark.parametrize("variant", ["eager fp32", "fast fp32"])
def test_nafnet_inference(measure, variant):
    net = model("nafnet_sidd_w32", fast=variant.startswith("fast"))
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        measure("nafnet inference", variant, lambda: net(x), rounds=5)


@pytest.mark.parametrize("variant", ["eager", "fast"])
def test_training_step(measure, variant):
    net = model("promptir", fast=variant == "fast").train()
    generator = torch.Generator().manual_seed(0)
    degraded, clean = torch.rand(2, 3, 128, 128, generator=generator), torch.rand(2, 3, 128, 128, generator=generator)

    def step():
        net.zero_grad(set_to_none=True)
        (net(degraded) - clean).abs().mean().backward()

    measure("promptir training step", variant, step, rounds=3)
