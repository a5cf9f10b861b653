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
    """A convolution on oneDNN's opaque prepacked weight (pyairir.nn.prepacked, as the fast models' resampling
    convolutions run): the profile counts its bytes (instead of failing on its storage) and its FLOPs as
    those of the eager convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 32, 2, stride=2).eval()
    x = torch.randn(1, 16, 12, 10).contiguous(memory_format=torch.channels_last)
    profile = OpProfile()
    with torch.no_grad(), profile:
        pyairir.nn.prepacked.conv(conv, x)
    assert "conv 2x2" in profile.rows and all(row.bytes > 0 for row in profile.rows.values())
    assert counted_flops(conv, x) == sum(row.flops for row in profile.rows.values())


@pytest.mark.parametrize("size", [(12, 10), (66, 5)])
def test_profile_counts_nafblock_fused_gemms(size):
    """NAFBlock's fused GEMMs (pyairir.nn.pointwise: nafblock_head, nafblock_tail) count the FLOPs of the
    eager block's convolutions (SCA's among them), so their rows compare with oneDNN's."""
    torch.manual_seed(0)
    block = pyairir.nn.set_fast(pyairir.nn.NAFBlock(16)).eval()
    x = torch.randn(1, 16, *size).contiguous(memory_format=torch.channels_last)
    profile = OpProfile()
    with torch.no_grad(), profile:
        block(x)
    assert "pyairir_cpu.nafblock_tail" in profile.rows and "pyairir_cpu.nafblock_head" in profile.rows
    pyairir.nn.set_fast(block, fast=False)
    assert counted_flops(block, x) == sum(row.flops for row in profile.rows.values())


def test_profile_counts_the_upscaling_gemm():
    """pointwise_conv with upscale (NAFNet's decoder) counts as the convolution before the shuffle."""
    torch.manual_seed(0)
    model = pyairir.models.nafnet.NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1], dec_blk_nums=[1]).eval()
    x = torch.rand(1, 3, 16, 16)
    eager = counted_flops(model, x)
    pyairir.nn.set_fast(model)
    profile = OpProfile()
    with torch.no_grad(), profile:
        model(x)
    assert "pyairir_cpu.pointwise_conv" in profile.rows and "pyairir_cpu.output_conv" in profile.rows
    assert sum(row.flops for row in profile.rows.values()) == eager
