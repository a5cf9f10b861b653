"""Whole backbones on one 3x256x256 image (batch 1), same weights in every variant: the official
code's structure (tests/official_like.py, whose keys and outputs are the official ones) in eager
PyTorch and under torch.compile (default, and freezing=True for inference), against pyairir's
fast model; in fp32, in bf16 (the same bf16 weights) and under bf16 autocast; and a training step."""

from __future__ import annotations

import pytest
import torch

import pyairir
from benchmarks.conftest import record_compile_time
from tests import official_like

SIZE = 256
OFFICIAL = {
    "promptir": official_like.PromptIR,
    "restormer": official_like.Restormer,
    "nafnet_sidd_w32": lambda: official_like.NAFNet(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8],
                                                    dec_blk_nums=[2, 2, 2, 2]),
}
VARIANTS = ["official eager fp32", "fast fp32", "compile fp32", "compile fp32 freezing",
            "official eager bf16 autocast", "compile bf16 autocast", "compile bf16", "compile bf16 freezing",
            "fast bf16"]


def fast_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return pyairir.create_model(name, fast=True).eval()


def official_model(name: str) -> torch.nn.Module:
    """The official structure holding the fast model's weights."""
    model = OFFICIAL[name]()
    model.load_state_dict(fast_model(name).state_dict())
    return model.eval()


def inference(name: str, variant: str):
    """The callable to time for `variant` of model `name`, with compilation (if any) done."""
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    bf16 = variant.endswith(("bf16", "bf16 freezing"))
    net = fast_model(name) if variant.startswith("fast") else official_model(name)
    if bf16:
        net, x = net.to(torch.bfloat16), x.to(torch.bfloat16)
        if variant.startswith("fast"):
            pyairir.nn.set_fast(net)  # the conv weights back to channels_last after the cast
    autocast = variant.endswith("autocast")
    if variant.startswith("compile"):
        torch._dynamo.reset()
        net = torch.compile(net, options={"freezing": True} if variant.endswith("freezing") else None)

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return net(x)

    if variant.startswith("compile"):
        with torch.no_grad():
            record_compile_time(f"{name} inference", variant, run)
    return run


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", ["promptir", "restormer"])
def test_inference(measure, name, variant):
    fn = inference(name, variant)
    with torch.no_grad():
        measure(f"{name} inference", variant, fn, rounds=5)


@pytest.mark.parametrize("variant", ["official eager fp32", "fast fp32", "compile fp32"])
def test_nafnet_inference(measure, variant):
    fn = inference("nafnet_sidd_w32", variant)
    with torch.no_grad():
        measure("nafnet inference", variant, fn, rounds=5)


@pytest.mark.parametrize("variant", ["official eager", "fast"])
def test_training_step(measure, variant):
    net = (fast_model("promptir") if variant == "fast" else official_model("promptir")).train()
    generator = torch.Generator().manual_seed(0)
    degraded, clean = torch.rand(2, 3, 128, 128, generator=generator), torch.rand(2, 3, 128, 128, generator=generator)

    def step():
        net.zero_grad(set_to_none=True)
        (net(degraded) - clean).abs().mean().backward()

    measure("promptir training step", variant, step, rounds=3)
