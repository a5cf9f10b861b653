"""PromptIR's prompt generation block (PGM).

    w = softmax(Linear(GAP(F)))                           (PromptIR Eq. 3)
    P = Conv3x3( Resize( sum_c w_c P_c ) )                 prompt components P_c,
with Resize the bilinear interpolation (align_corners=False) to F's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PromptGenBlock(nn.Module):
    """Keys: prompt_param (1, prompt_len, prompt_dim, prompt_size, prompt_size) ~ U[0, 1);
    linear_layer (prompt_len, lin_dim) + bias; conv3x3 (prompt_dim, prompt_dim, 3, 3).
    forward: x (B, lin_dim, H, W) -> prompt (B, prompt_dim, H, W)."""

    def __init__(self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96,
                 lin_dim: int = 192) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.linear_layer(x.mean(dim=(-2, -1))), dim=1)  # (B, prompt_len)
        prompt = (weights[:, :, None, None, None] * self.prompt_param).sum(dim=1)  # (B, prompt_dim, s, s)
        prompt = F.interpolate(prompt, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv3x3(prompt)
