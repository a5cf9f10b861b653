"""benchmarks/profile.py counts a pyairir op's FLOPs as flop_counter counts the aten ops it
replaces, so that a fused op's fraction of roofline is comparable with theirs."""

from __future__ import annotations

import pytest
import torch

import pyairir
from benchmarks.profile import OpProfile


def counted_flops(module: torch.nn.Module, x: torch.Tensor) -> int:
    profile = OpProfile()
    with torch.no_grad(), profile:
        module(x)
    return sum(row.flops for row in profile.rows.values())


@pytest.mark.parametrize("block", ["GDFN", "MDTA"])
def test_fused_ops_count_the_flops_of_the_eager_ops_they_replace(block):
    torch.manual_seed(0)
    module = (pyairir.nn.GDFN(8, 2.66, bias=False) if block == "GDFN" else pyairir.nn.MDTA(8, 2, bias=False)).eval()
    x = torch.randn(1, 8, 12, 10)
    eager = counted_flops(module, x)
    pyairir.nn.set_fast(module, fast=True)
    assert eager > 0 and counted_flops(module, x) == eager


def test_profile_counts_prepacked_weights():
    """NAFBlock's fast inference passes oneDNN's opaque prepacked weights (pyairir.nn.prepacked) to
    its convolutions: the profile counts their bytes (instead of failing on their storage) and
    their FLOPs as those of the eager block's convolutions."""
    torch.manual_seed(0)
    block = pyairir.nn.set_fast(pyairir.nn.NAFBlock(16)).eval()
    x = torch.randn(1, 16, 12, 10).contiguous(memory_format=torch.channels_last)
    profile = OpProfile()
    with torch.no_grad(), profile:
        block(x)
    assert all(row.bytes > 0 for row in profile.rows.values())
    pyairir.nn.set_fast(block, fast=False)
    assert counted_flops(block, x) == sum(row.flops for row in profile.rows.values())  # as the eager convs

