"""Restormer's patch embedding and pixel-(un)shuffle resampling, no biases by default. fast=True:
a bf16 input computes in float32 where the CPU has no bf16 arithmetic (pyairir.nn.fast.compute_dtype)."""

from __future__ import annotations

import torch
from torch import nn

from pyairir.nn.fast import standalone_conv


class OverlapPatchEmbed(nn.Module):
    """3x3 conv embedding, key `proj.weight` (embed_dim, in_c, 3, 3). (B, in_c, H, W) -> (B, embed_dim, H, W)."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False, fast: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return standalone_conv(self.proj, x, self.fast)


class Downsample(nn.Module):
    """3x3 conv to n/2 channels then PixelUnshuffle(2): (B, n, H, W) -> (B, 2n, H/2, W/2). Key `body.0.weight`."""

    def __init__(self, n_feat: int, fast: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, unshuffle = self.body
        return unshuffle(standalone_conv(conv, x, self.fast))


class Upsample(nn.Module):
    """3x3 conv to 2n channels then PixelShuffle(2): (B, n, H, W) -> (B, n/2, 2H, 2W). Key `body.0.weight`."""

    def __init__(self, n_feat: int, fast: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelShuffle(2))
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, shuffle = self.body
        return shuffle(standalone_conv(conv, x, self.fast))
