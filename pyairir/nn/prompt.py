"""PromptIR's prompt generation block (PGM).

    w = softmax(Linear(GAP(F)))                           (PromptIR Eq. 3)
    P = Conv3x3( Resize( sum_c w_c P_c ) )                 prompt components P_c,
with Resize the bilinear interpolation (align_corners=False) to F's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pyairir import ops
from pyairir.nn.fast import compute_dtype, conv, like


class PromptGenBlock(nn.Module):
    """Keys: prompt_param (1, prompt_len, prompt_dim, prompt_size, prompt_size) ~ U[0, 1);
    linear_layer (prompt_len, lin_dim) + bias; conv3x3 (prompt_dim, prompt_dim, 3, 3).
    forward: x (B, lin_dim, H, W) -> prompt (B, prompt_dim, H, W).
    fast: weights, weighted sum and resize in one kernel (pyairir.ops.topk_prompt with k = prompt_len)."""

    def __init__(self, prompt_dim: int = 128, prompt_len: int = 5, prompt_size: int = 96,
                 lin_dim: int = 192, fast: bool = False) -> None:
        super().__init__()
        self.prompt_param = nn.Parameter(torch.rand(1, prompt_len, prompt_dim, prompt_size, prompt_size))
        self.linear_layer = nn.Linear(lin_dim, prompt_len)
        self.conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, kernel_size=3, padding=1, bias=False)
        self.fast = fast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """fast: a bf16 x computes in float32 where the CPU has no bf16 arithmetic
        (pyairir.nn.fast.compute_dtype); the prompt is in x's dtype."""
        features = x.to(compute_dtype(self.fast, x))
        linear = self.linear_layer
        logits = F.linear(features.mean(dim=(-2, -1)), like(linear.weight, features), like(linear.bias, features))
        return conv(self.conv3x3, self.route(logits, x.shape[-2:])).to(x.dtype)  # logits (B, prompt_len)

    def route(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Gate logits (B, prompt_len) -> the weighted prompt resized to size, (B, prompt_dim, *size)."""
        if self.fast:
            prompts = like(self.prompt_param[0], logits)
            return ops.topk_prompt(logits, prompts, *size, prompts.shape[0], renormalize=False)[0]
        weights = F.softmax(logits, dim=1)
        prompt = (weights[:, :, None, None, None] * self.prompt_param).sum(dim=1)  # (B, prompt_dim, s, s)
        return F.interpolate(prompt, size=tuple(size), mode="bilinear", align_corners=False)
