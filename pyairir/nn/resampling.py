"""Restormer's patch embedding and pixel-(un)shuffle resampling, no biases by default."""

from __future__ import annotations

import torch
from torch import nn


class OverlapPatchEmbed(nn.Module):
    """3x3 conv embedding, key `proj.weight` (embed_dim, in_c, 3, 3). (B, in_c, H, W) -> (B, embed_dim, H, W)."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """3x3 conv to n/2 channels then PixelUnshuffle(2): (B, n, H, W) -> (B, 2n, H/2, W/2). Key `body.0.weight`."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv to 2n channels then PixelShuffle(2): (B, n, H, W) -> (B, n/2, 2H, 2W). Key `body.0.weight`."""

    def __init__(self, n_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, kernel_size=3, padding=1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
